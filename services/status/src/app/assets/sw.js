// The responder app's service worker: the app shell loads without a network.
//
// Only the page's own files are cached, and network first: online, every load gets the
// current version (and refreshes the copy); offline, the copy is served, so the page opens
// and its queue of actions waits for the network. The API, the event stream and sign-in are
// never cached or answered from a cache: they are personal and live, and a stale answer
// there would show an assignment that no longer is.
"use strict";

const CACHE = "helpgrid-app-shell-v1";
const SHELL = ["/app/", "/app/app.js", "/app/app.css", "/app/manifest.webmanifest", "/app/icon.svg"];

self.addEventListener("install", (event) => {
  event.waitUntil(
    caches.open(CACHE).then((cache) => cache.addAll(SHELL)).then(() => self.skipWaiting())
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((keys) => Promise.all(keys.filter((k) => k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim())
  );
});

self.addEventListener("fetch", (event) => {
  const request = event.request;
  const url = new URL(request.url);
  if (request.method !== "GET" || url.origin !== self.location.origin || !SHELL.includes(url.pathname)) {
    return; // the browser fetches it as if there were no worker
  }
  event.respondWith(
    fetch(request)
      .then((answer) => {
        if (answer.ok) {
          const copy = answer.clone();
          event.waitUntil(caches.open(CACHE).then((cache) => cache.put(url.pathname, copy)));
        }
        return answer;
      })
      .catch(() => caches.match(url.pathname).then((hit) => hit || Response.error()))
  );
});
