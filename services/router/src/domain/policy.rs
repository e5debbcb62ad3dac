//! The rules a deployment tunes. Defaults suit a community office; tests shorten the clocks.

use helpgrid_common::time::Millis;
use helpgrid_proto::pb::{CameraLabel, Priority};

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Time a responder has to acknowledge, by priority.
    pub ack_deadline_normal_ms: Millis,
    pub ack_deadline_high_ms: Millis,
    pub ack_deadline_critical_ms: Millis,
    /// Offers at one escalation level (to different responders) before moving up.
    pub max_attempts_per_level: u32,
    /// Camera detections below this confidence open nothing.
    pub camera_min_confidence: f32,
    /// A repeat of the same camera and label within this time of the last one attaches.
    pub camera_dedup_window_ms: Millis,
    /// Closed incidents stay in memory this long, to recognise late repeats and commands.
    pub closed_retention_ms: Millis,
    /// Write an opening as `opened` followed by one `assigned` per track (the shape Kafka
    /// consumers written before `IncidentOpened.assigned` wait for) instead of one "opened
    /// and assigned" event (the default: ~1.1 instead of ~2.1 incident events per press).
    pub separate_assigned_events: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            ack_deadline_normal_ms: 120_000,
            ack_deadline_high_ms: 60_000,
            ack_deadline_critical_ms: 30_000,
            max_attempts_per_level: 2,
            camera_min_confidence: 0.6,
            camera_dedup_window_ms: 300_000,
            closed_retention_ms: 3_600_000,
            separate_assigned_events: false,
        }
    }
}

impl Policy {
    /// This policy with one acknowledgement deadline for every priority.
    pub fn with_ack_deadline_ms(self, ms: Millis) -> Self {
        Self {
            ack_deadline_normal_ms: ms,
            ack_deadline_high_ms: ms,
            ack_deadline_critical_ms: ms,
            ..self
        }
    }

    pub fn ack_deadline_ms(&self, priority: Priority) -> Millis {
        match priority {
            Priority::Critical => self.ack_deadline_critical_ms,
            Priority::High => self.ack_deadline_high_ms,
            Priority::Normal | Priority::Unspecified => self.ack_deadline_normal_ms,
        }
    }
}

/// Labels where someone may be hurt: they need the police and the community at once.
pub fn is_severe(label: CameraLabel) -> bool {
    matches!(
        label,
        CameraLabel::Fire | CameraLabel::Fall | CameraLabel::Fight
    )
}

pub fn camera_priority(label: CameraLabel) -> Priority {
    match label {
        CameraLabel::Fire | CameraLabel::Fall | CameraLabel::Fight => Priority::Critical,
        CameraLabel::Intrusion => Priority::High,
        CameraLabel::Crowd | CameraLabel::Loitering | CameraLabel::Unspecified => Priority::Normal,
    }
}

/// One step up, capped at critical: how a repeat press raises urgency.
pub fn raised(priority: Priority) -> Priority {
    match priority {
        Priority::Unspecified | Priority::Normal => Priority::High,
        Priority::High | Priority::Critical => Priority::Critical,
    }
}
