//! Who may do what — decided here and nowhere else.
//!
//! Two steps. [`AccessLayer`] wraps every gRPC service: it reads the bearer token, verifies
//! it, and checks the caller's role against [`POLICY`], the table of every RPC; a missing or
//! invalid token is UNAUTHENTICATED, a role the table does not list is PERMISSION_DENIED. The
//! caller then rides in the request's extensions as a [`Caller`], whose methods answer the
//! questions that need the request's content (is this grid in scope, is this the caller's
//! own id, is this incident meant for police). The handlers ask; they never decide.
//!
//! With authentication off (an explicit `--insecure-no-auth` for local experiments) every
//! caller is [`Caller::unrestricted`] and commands carry no role; the router then applies
//! its roster rules alone.

use crate::police::is_police_bound;
use crate::telemetry;
use futures::future::Either;
use helpgrid_auth::areas::AreaTree;
use helpgrid_auth::revocation::RevocationWatch;
use helpgrid_auth::{Identity, Role, Scope, TokenError, TokenKey};
use helpgrid_proto::pb::{ActorRole, Incident, Responder};
use std::collections::HashSet;
use std::future::Ready;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::Status;

/// Who may call a method: anyone (health, reflection), or callers with one of these roles.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    Public,
    Roles(&'static [Role]),
}

use Role::{Admin, Console, Dispatch, Responder as Resp, Supervisor};

const READERS: &[Role] = &[Resp, Supervisor, Console, Dispatch, Admin];
const ACTORS: &[Role] = &[Resp, Supervisor, Dispatch];

/// Every RPC the server offers and who may call it. A method missing here is refused, so a
/// new RPC cannot go out unguarded (a test checks the table against the contract).
pub const POLICY: &[(&str, Rule)] = &[
    ("/grpc.health.v1.Health/Check", Rule::Public),
    ("/grpc.health.v1.Health/Watch", Rule::Public),
    (
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        Rule::Public,
    ),
    // The older reflection version: grpcurl before 1.8, grpc_cli, Postman, Evans and Python's
    // grpcio-reflection still ask for this one.
    (
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        Rule::Public,
    ),
    // Incidents: reads limited to the caller's grids (dispatch: police-bound incidents).
    (
        "/helpgrid.v1.IncidentService/GetIncident",
        Rule::Roles(READERS),
    ),
    (
        "/helpgrid.v1.IncidentService/ListIncidents",
        Rule::Roles(READERS),
    ),
    (
        "/helpgrid.v1.IncidentService/WatchIncidents",
        Rule::Roles(READERS),
    ),
    // Commands: under the caller's own id, in their grids; the router re-checks.
    (
        "/helpgrid.v1.IncidentService/Acknowledge",
        Rule::Roles(ACTORS),
    ),
    ("/helpgrid.v1.IncidentService/Close", Rule::Roles(ACTORS)),
    // "I need help": the assignee; the grid's supervisor or an admin pushes an incident up
    // (the router checks who is assigned and who supervises the grid).
    (
        "/helpgrid.v1.IncidentService/Escalate",
        Rule::Roles(&[Resp, Supervisor, Admin]),
    ),
    // Revoking a lost phone's tokens.
    (
        "/helpgrid.v1.TokenService/RevokeTokens",
        Rule::Roles(&[Admin]),
    ),
    (
        "/helpgrid.v1.DispatchService/WatchPoliceIncidents",
        Rule::Roles(&[Dispatch, Supervisor, Admin]),
    ),
    (
        "/helpgrid.v1.DispatchService/GetIncidentCap",
        Rule::Roles(&[Dispatch, Supervisor, Admin]),
    ),
    // Roster: admins write it; responders change their own duty and location; supervisors
    // those of the responders of their grids.
    (
        "/helpgrid.v1.RosterService/UpsertResponder",
        Rule::Roles(&[Admin]),
    ),
    (
        "/helpgrid.v1.RosterService/GetResponder",
        Rule::Roles(&[Resp, Supervisor, Dispatch, Admin]),
    ),
    (
        "/helpgrid.v1.RosterService/ListResponders",
        Rule::Roles(&[Supervisor, Dispatch, Admin]),
    ),
    (
        "/helpgrid.v1.RosterService/SetDuty",
        Rule::Roles(&[Resp, Supervisor, Admin]),
    ),
    (
        "/helpgrid.v1.RosterService/UpdateLocation",
        Rule::Roles(&[Resp, Supervisor, Admin]),
    ),
];

pub fn rule_for(path: &str) -> Option<Rule> {
    POLICY
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, rule)| *rule)
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AccessError {
    #[error("no bearer token: send the header `authorization: Bearer <token>`")]
    NoToken,
    #[error(transparent)]
    BadToken(#[from] TokenError),
    #[error("{0}")]
    Denied(String),
    /// A method the server does not offer. UNIMPLEMENTED, as gRPC says for an unknown
    /// method: stock clients fall back on that code (e.g. from reflection v1 to v1alpha).
    #[error("{0} is not a method of this server; `grpcurl list` shows the ones it offers")]
    Unknown(String),
}

impl AccessError {
    pub fn code(&self) -> tonic::Code {
        match self {
            Self::NoToken | Self::BadToken(_) => tonic::Code::Unauthenticated,
            Self::Denied(_) => tonic::Code::PermissionDenied,
            Self::Unknown(_) => tonic::Code::Unimplemented,
        }
    }
}

impl From<AccessError> for Status {
    fn from(error: AccessError) -> Self {
        Status::new(error.code(), error.to_string())
    }
}

fn denied(message: impl Into<String>) -> AccessError {
    AccessError::Denied(message.into())
}

/// Verifies tokens; `None` when authentication is off.
#[derive(Debug, Clone)]
pub struct Gate {
    key: Option<Arc<TokenKey>>,
    /// The area registry: a token naming an area covers the grids below it.
    areas: Arc<AreaTree>,
}

impl Gate {
    pub fn new(key: Option<TokenKey>) -> Self {
        Self {
            key: key.map(Arc::new),
            areas: Arc::default(),
        }
    }

    pub fn with_areas(mut self, areas: AreaTree) -> Self {
        self.areas = Arc::new(areas);
        self
    }

    pub fn areas(&self) -> &AreaTree {
        &self.areas
    }

    pub fn is_on(&self) -> bool {
        self.key.is_some()
    }

    /// The token key (with its revocations), for the follower that keeps it current.
    pub fn key(&self) -> Option<&Arc<TokenKey>> {
        self.key.as_ref()
    }

    /// Who sends `token` (the part after `Bearer `), or why they cannot be let in.
    pub fn identify(&self, token: Option<&str>) -> Result<Caller, AccessError> {
        let Some(key) = &self.key else {
            return Ok(Caller::unrestricted());
        };
        let token = token
            .filter(|t| !t.is_empty())
            .ok_or(AccessError::NoToken)?;
        let mut identity = key.verify(token)?;
        identity.scope = self.areas.resolve(&identity.scope);
        Ok(Caller {
            identity: Some(identity),
            key: Some(Arc::clone(key)),
        })
    }

    /// A new token for `identity` valid for `ttl` (the app's session after a sign-in link).
    pub fn mint_session(
        &self,
        identity: &Identity,
        ttl: std::time::Duration,
    ) -> Result<String, AccessError> {
        let key = self.key.as_ref().ok_or(AccessError::NoToken)?;
        let grids = match &identity.scope {
            Scope::AllGrids => vec![helpgrid_auth::ALL_GRIDS.to_owned()],
            Scope::Grids(grids) => grids.iter().cloned().collect(),
        };
        Ok(key.mint(&identity.subject, identity.role, &grids, ttl)?)
    }

    /// The first step for one gRPC call: the token, then the policy table.
    pub fn admit(&self, path: &str, headers: &http::HeaderMap) -> Result<Caller, AccessError> {
        let rule = rule_for(path).ok_or_else(|| AccessError::Unknown(path.to_owned()))?;
        if rule == Rule::Public {
            return Ok(Caller::unrestricted());
        }
        let caller = self.identify(bearer(headers))?;
        if let (Rule::Roles(roles), Some(identity)) = (rule, &caller.identity)
            && !roles.contains(&identity.role)
        {
            let method = path.rsplit('/').next().unwrap_or(path);
            return Err(denied(format!(
                "the {} role may not call {method}",
                identity.role
            )));
        }
        Ok(caller)
    }
}

/// The token of an `authorization: Bearer <token>` header.
pub fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// The caller of one request, as the layer admitted them.
#[derive(Debug, Clone)]
pub struct Caller {
    /// `None`: authentication is off, or the method is public.
    identity: Option<Identity>,
    /// The key that admitted them: its revocations end their streams.
    key: Option<Arc<TokenKey>>,
}

/// Two callers are the same caller when they are the same identity (the key is how they
/// were admitted, not who they are).
impl PartialEq for Caller {
    fn eq(&self, other: &Self) -> bool {
        self.identity == other.identity
    }
}

impl Caller {
    pub fn unrestricted() -> Self {
        Self {
            identity: None,
            key: None,
        }
    }

    /// Resolves-when-revoked for this caller's sign-in, for a stream that must not outlive
    /// it (`None` with authentication off).
    pub fn revocation_watch(&self) -> Option<RevocationWatch> {
        Some(self.key.as_ref()?.revocation_watch(self.identity.as_ref()?))
    }

    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    pub fn role(&self) -> Option<Role> {
        self.identity.as_ref().map(|i| i.role)
    }

    /// The role written on commands for the router to re-check.
    pub fn actor_role(&self) -> ActorRole {
        match self.role() {
            None => ActorRole::Unspecified,
            Some(Resp) => ActorRole::Responder,
            Some(Supervisor) => ActorRole::Supervisor,
            Some(Console) => ActorRole::Console,
            Some(Dispatch) => ActorRole::Dispatch,
            Some(Admin) => ActorRole::Admin,
        }
    }

    fn covers(&self, grid_id: &str) -> bool {
        self.identity
            .as_ref()
            .is_none_or(|i| i.scope.covers(grid_id))
    }

    /// May the caller see this incident at all?
    pub fn may_read(&self, incident: &Incident) -> Result<(), AccessError> {
        let Some(identity) = &self.identity else {
            return Ok(());
        };
        // One answer for both refusals, naming nothing the caller may not see (not even the
        // incident's grid): only that this incident is not visible to this token.
        if !identity.scope.covers(&incident.grid_id)
            || (identity.role == Dispatch && !is_police_bound(incident))
        {
            return Err(denied(format!(
                "incident {} is not visible to your token",
                incident.incident_id
            )));
        }
        Ok(())
    }

    /// The grids a list or watch may cover: those asked for, each in scope; if none were
    /// asked for, the caller's grids (an empty set meaning all, for callers with every grid).
    pub fn grid_filter(&self, asked: HashSet<String>) -> Result<HashSet<String>, AccessError> {
        let Some(identity) = &self.identity else {
            return Ok(asked);
        };
        if let Some(outside) = asked.iter().find(|g| !identity.scope.covers(g)) {
            return Err(denied(format!(
                "grid {outside} is not among the grids of your token"
            )));
        }
        match (&identity.scope, asked.is_empty()) {
            (Scope::Grids(grids), true) if grids.is_empty() => {
                Err(denied("your token covers no grids"))
            }
            (Scope::Grids(grids), true) => Ok(grids.iter().cloned().collect()),
            _ => Ok(asked),
        }
    }

    /// Whether lists and watches must keep to police-bound incidents (dispatch callers).
    pub fn police_only(&self) -> bool {
        self.role() == Some(Dispatch)
    }

    /// Who acts in a command: the caller themselves. An empty `responder_id` means "me"; any
    /// other id is refused (a supervisor acts for a worker under their own id).
    pub fn actor_id(&self, asked: &str) -> Result<String, AccessError> {
        match &self.identity {
            None => Ok(asked.to_owned()),
            Some(identity) if asked.is_empty() || asked == identity.subject => {
                Ok(identity.subject.clone())
            }
            Some(identity) => Err(denied(format!(
                "responder_id {asked:?} is not you ({}); act under your own id",
                identity.subject
            ))),
        }
    }

    /// A command on `incident`: in the caller's grids, and police-bound for dispatch.
    pub fn may_command(&self, incident: &Incident) -> Result<(), AccessError> {
        self.may_read(incident)
    }

    /// May the caller read this responder? Themselves, or someone sharing a grid of scope.
    pub fn may_read_responder(&self, responder: &Responder) -> Result<(), AccessError> {
        match &self.identity {
            None => Ok(()),
            Some(identity) if identity.subject == responder.responder_id => Ok(()),
            Some(identity)
                if identity.role != Resp && identity.scope.covers_any(&responder.grid_ids) =>
            {
                Ok(())
            }
            Some(_) => Err(denied(format!(
                "responder {} is not in the grids of your token",
                responder.responder_id
            ))),
        }
    }

    /// Duty and location: a responder their own; supervisors and admins those in their grids.
    pub fn may_update_responder(&self, responder: &Responder) -> Result<(), AccessError> {
        match &self.identity {
            None => Ok(()),
            Some(identity) if identity.subject == responder.responder_id => Ok(()),
            Some(identity)
                if matches!(identity.role, Supervisor | Admin)
                    && identity.scope.covers_any(&responder.grid_ids) =>
            {
                Ok(())
            }
            Some(_) => Err(denied(format!(
                "you may not change responder {}",
                responder.responder_id
            ))),
        }
    }

    /// Upsert (admins only, by the table): every grid of the responder must be in scope.
    pub fn may_write_roster(&self, responder: &Responder) -> Result<(), AccessError> {
        match responder.grid_ids.iter().find(|g| !self.covers(g)) {
            None => Ok(()),
            Some(grid) => Err(denied(format!(
                "grid {grid} is not among the grids of your token"
            ))),
        }
    }

    /// ListResponders of one grid (or of all, filtered afterwards by [`Self::sees_responder`]).
    pub fn may_list_grid(&self, grid_id: Option<&str>) -> Result<(), AccessError> {
        match grid_id {
            Some(grid) if !self.covers(grid) => Err(denied(format!(
                "grid {grid} is not among the grids of your token"
            ))),
            _ => Ok(()),
        }
    }

    pub fn sees_responder(&self, responder: &Responder) -> bool {
        self.may_read_responder(responder).is_ok()
    }
}

/// Puts [`Gate::admit`] in front of every gRPC service.
#[derive(Debug, Clone)]
pub struct AccessLayer {
    gate: Gate,
}

impl AccessLayer {
    pub fn new(gate: Gate) -> Self {
        Self { gate }
    }
}

impl<S> tower::Layer<S> for AccessLayer {
    type Service = AccessService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AccessService {
            inner,
            gate: self.gate.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AccessService<S> {
    inner: S,
    gate: Gate,
}

impl<S, B> tower::Service<http::Request<B>> for AccessService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<S::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        match self.gate.admit(request.uri().path(), request.headers()) {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                Either::Left(self.inner.call(request))
            }
            Err(error) => {
                telemetry::access_refused(error.code());
                tracing::info!(path = request.uri().path(), %error, "call refused");
                Either::Right(std::future::ready(Ok(Status::from(error).into_http())))
            }
        }
    }
}

/// The caller the layer admitted. Absent only if a service was mounted without the layer,
/// which is a wiring bug: refuse rather than serve unguarded.
pub fn caller_of<T>(request: &tonic::Request<T>) -> Result<Caller, AccessError> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| denied("the access check did not run; this is a server bug"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use helpgrid_proto::pb::{Assignment, IncidentSource, Track};
    use std::time::Duration;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn gate() -> (Gate, TokenKey) {
        let key = TokenKey::from_secret(SECRET).expect("key");
        (
            Gate::new(Some(TokenKey::from_secret(SECRET).expect("key"))),
            key,
        )
    }

    fn headers(token: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        let value = format!("Bearer {token}").parse().expect("header value");
        headers.insert(http::header::AUTHORIZATION, value);
        headers
    }

    fn token(key: &TokenKey, sub: &str, role: Role, grids: &[&str]) -> String {
        let grids: Vec<String> = grids.iter().map(|g| (*g).to_owned()).collect();
        key.mint(sub, role, &grids, Duration::from_secs(60))
            .expect("mint")
    }

    #[test]
    fn every_rpc_of_the_contract_has_a_rule_and_every_rule_an_rpc() {
        use prost::Message;
        let set = prost_types::FileDescriptorSet::decode(helpgrid_proto::FILE_DESCRIPTOR_SET)
            .expect("descriptor set");
        let mut offered = Vec::new();
        // Services other processes serve (the archive's history and reports) have their own
        // access rules there.
        const SERVED_HERE: [&str; 4] = [
            "IncidentService",
            "DispatchService",
            "RosterService",
            "TokenService",
        ];
        for file in &set.file {
            for service in &file.service {
                if !SERVED_HERE.contains(&service.name()) {
                    continue;
                }
                for method in &service.method {
                    offered.push(format!(
                        "/{}.{}/{}",
                        file.package(),
                        service.name(),
                        method.name()
                    ));
                }
            }
        }
        for path in &offered {
            assert!(rule_for(path).is_some(), "{path} has no access rule");
        }
        for (path, _) in POLICY {
            assert!(
                offered.contains(&(*path).to_owned()) || !path.starts_with("/helpgrid."),
                "{path} is not in the contract"
            );
        }
    }

    #[test]
    fn no_token_or_a_bad_one_is_unauthenticated_a_wrong_role_permission_denied() {
        let (gate, key) = gate();
        let path = "/helpgrid.v1.RosterService/UpsertResponder";
        let none = gate.admit(path, &http::HeaderMap::new());
        assert_eq!(
            none.err().map(|e| e.code()),
            Some(tonic::Code::Unauthenticated)
        );
        let garbled = gate.admit(path, &headers("abc"));
        assert_eq!(
            garbled.err().map(|e| e.code()),
            Some(tonic::Code::Unauthenticated)
        );
        let console = gate.admit(path, &headers(&token(&key, "c", Console, &["g1"])));
        assert_eq!(
            console.err().map(|e| e.code()),
            Some(tonic::Code::PermissionDenied)
        );
        let admin = gate.admit(path, &headers(&token(&key, "a", Admin, &["*"])));
        assert!(admin.is_ok());
        assert!(
            gate.admit("/grpc.health.v1.Health/Check", &http::HeaderMap::new())
                .is_ok()
        );
        let unknown = gate.admit(
            "/helpgrid.v1.Secret/Everything",
            &headers(&token(&key, "a", Admin, &["*"])),
        );
        assert_eq!(
            unknown.err().map(|e| e.code()),
            Some(tonic::Code::Unimplemented)
        );
        // Unknown even without a token: the method's absence is no secret, and a stock
        // client probing for reflection v1 must learn to fall back.
        let probe = gate.admit("/helpgrid.v1.Secret/Everything", &http::HeaderMap::new());
        assert_eq!(
            probe.err().map(|e| e.code()),
            Some(tonic::Code::Unimplemented)
        );
    }

    fn caller(key: &TokenKey, sub: &str, role: Role, grids: &[&str]) -> Caller {
        Gate::new(Some(TokenKey::from_secret(SECRET).expect("key")))
            .identify(Some(&token(key, sub, role, grids)))
            .expect("caller")
    }

    #[test]
    fn a_console_sees_its_grids_only_and_an_empty_filter_means_its_grids() {
        let (_, key) = gate();
        let console = caller(&key, "c", Console, &["g1", "g2"]);
        let mine = console.grid_filter(HashSet::new()).expect("own grids");
        assert_eq!(mine, HashSet::from(["g1".to_owned(), "g2".to_owned()]));
        assert!(
            console
                .grid_filter(HashSet::from(["g3".to_owned()]))
                .is_err()
        );
        let other = Incident {
            grid_id: "g3".into(),
            ..Default::default()
        };
        let refusal = console
            .may_read(&other)
            .expect_err("outside the token's grids");
        assert!(
            !refusal.to_string().contains("g3"),
            "a refusal must not name the incident's grid: {refusal}"
        );
        let nothing = caller(&key, "c", Console, &[]);
        assert!(nothing.grid_filter(HashSet::new()).is_err());
    }

    #[test]
    fn dispatch_sees_police_bound_incidents_only() {
        let (_, key) = gate();
        let dispatch = caller(&key, "cad", Dispatch, &["*"]);
        let camera = Incident {
            grid_id: "g1".into(),
            source: IncidentSource::Camera as i32,
            ..Default::default()
        };
        let community = Incident {
            grid_id: "g1".into(),
            source: IncidentSource::Button as i32,
            assignments: vec![Assignment {
                track: Track::Community as i32,
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(dispatch.may_read(&camera).is_ok());
        assert!(dispatch.may_read(&community).is_err());
    }

    #[test]
    fn commands_are_sent_under_the_callers_own_id() {
        let (_, key) = gate();
        let worker = caller(&key, "w1", Resp, &["g1"]);
        assert_eq!(worker.actor_id(""), Ok("w1".to_owned()));
        assert_eq!(worker.actor_id("w1"), Ok("w1".to_owned()));
        assert!(worker.actor_id("w2").is_err());
        assert_eq!(worker.actor_role(), ActorRole::Responder);
        assert_eq!(Caller::unrestricted().actor_id("w2"), Ok("w2".to_owned()));
    }

    #[test]
    fn responders_change_only_themselves_supervisors_their_grids() {
        let (_, key) = gate();
        let someone = Responder {
            responder_id: "w2".into(),
            grid_ids: vec!["g1".into()],
            ..Default::default()
        };
        assert!(
            caller(&key, "w1", Resp, &["g1"])
                .may_update_responder(&someone)
                .is_err()
        );
        assert!(
            caller(&key, "w2", Resp, &["g1"])
                .may_update_responder(&someone)
                .is_ok()
        );
        assert!(
            caller(&key, "s", Supervisor, &["g1"])
                .may_update_responder(&someone)
                .is_ok()
        );
        assert!(
            caller(&key, "s", Supervisor, &["g9"])
                .may_update_responder(&someone)
                .is_err()
        );
    }
}
