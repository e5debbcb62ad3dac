//! Every history and report request is checked here, once, at the edge: pure, unit-tested.
//! A bad request becomes INVALID_ARGUMENT with a message saying what to change.

use helpgrid_common::time::{Millis, from_timestamp};
use helpgrid_proto::pb::{
    CameraLabel, IncidentOutcome, IncidentSource, IncidentState, ListHistoryRequest, PressKind,
    ReportBucket, ReportRequest, Resolution,
};
use prost_types::Timestamp;

pub const DEFAULT_PAGE: u32 = 100;
pub const MAX_PAGE: u32 = 1000;
/// Longest report period: a report is one pass over the period's incidents.
pub const MAX_REPORT_DAYS: i64 = 400;
const DAY_MS: i64 = 86_400_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

impl From<Invalid> for tonic::Status {
    fn from(invalid: Invalid) -> Self {
        tonic::Status::invalid_argument(invalid.0)
    }
}

fn invalid(message: impl Into<String>) -> Invalid {
    Invalid(message.into())
}

/// [from, to) in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub from: Millis,
    pub to: Millis,
}

pub fn period(from: Option<&Timestamp>, to: Option<&Timestamp>) -> Result<Period, Invalid> {
    let from = from_timestamp(from).ok_or_else(|| invalid("`from` is required (a timestamp)"))?;
    let to = from_timestamp(to).ok_or_else(|| invalid("`to` is required (a timestamp)"))?;
    if from >= to {
        return Err(invalid(format!(
            "`from` must be before `to` (got from={from} ms, to={to} ms since the epoch)"
        )));
    }
    Ok(Period { from, to })
}

/// Where the previous page ended: the last incident's opened_at and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub opened_at: Millis,
    pub incident_id: String,
}

impl Cursor {
    pub fn encode(&self) -> String {
        format!("{}:{}", self.opened_at, self.incident_id)
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    pub fn decode(token: &str) -> Result<Self, Invalid> {
        let bad =
            || invalid("`page_token` is not one this service gave out; start again without it");
        if !token.len().is_multiple_of(2) {
            return Err(bad());
        }
        let bytes: Result<Vec<u8>, _> = (0..token.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&token[i..i + 2], 16))
            .collect();
        let text = String::from_utf8(bytes.map_err(|_| bad())?).map_err(|_| bad())?;
        let (ms, id) = text.split_once(':').ok_or_else(bad)?;
        Ok(Self {
            opened_at: ms.parse().map_err(|_| bad())?,
            incident_id: id.to_owned(),
        })
    }
}

/// A checked ListIncidents request.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryQuery {
    pub period: Period,
    pub area: String,
    pub source: Option<i16>,
    /// The `kind` column: "button:urgent", "camera:fire".
    pub kind: Option<String>,
    pub state: Option<i16>,
    pub resolution: Option<i16>,
    pub outcome: Option<i16>,
    pub page_size: u32,
    pub after: Option<Cursor>,
}

fn known<E: TryFrom<i32>>(value: i32, field: &str) -> Result<Option<i16>, Invalid> {
    if value == 0 {
        return Ok(None);
    }
    E::try_from(value)
        .map(|_| Some(value as i16))
        .map_err(|_| invalid(format!("`{field}` has no value {value}")))
}

fn short(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix)
        .unwrap_or(name)
        .to_ascii_lowercase()
}

pub fn history_query(request: &ListHistoryRequest) -> Result<HistoryQuery, Invalid> {
    let period = period(request.from.as_ref(), request.to.as_ref())?;
    let source = known::<IncidentSource>(request.source, "source")?;
    let kind = match (request.press_kind, request.camera_label) {
        (0, 0) => None,
        (p, 0) => Some(format!(
            "button:{}",
            short(
                PressKind::try_from(p)
                    .map_err(|_| invalid(format!("`press_kind` has no value {p}")))?
                    .as_str_name(),
                "PRESS_KIND_"
            )
        )),
        (0, c) => Some(format!(
            "camera:{}",
            short(
                CameraLabel::try_from(c)
                    .map_err(|_| invalid(format!("`camera_label` has no value {c}")))?
                    .as_str_name(),
                "CAMERA_LABEL_"
            )
        )),
        _ => return Err(invalid("give `press_kind` or `camera_label`, not both")),
    };
    let page_size = match request.page_size {
        0 => DEFAULT_PAGE,
        n if n > MAX_PAGE => {
            return Err(invalid(format!(
                "`page_size` is at most {MAX_PAGE}, got {n}"
            )));
        }
        n => n,
    };
    let after = match request.page_token.as_str() {
        "" => None,
        token => Some(Cursor::decode(token)?),
    };
    Ok(HistoryQuery {
        period,
        area: request.area_id.trim().to_owned(),
        source,
        kind,
        state: known::<IncidentState>(request.state, "state")?,
        resolution: known::<Resolution>(request.resolution, "resolution")?,
        outcome: known::<IncidentOutcome>(request.outcome, "outcome")?,
        page_size,
        after,
    })
}

/// Series granularity, as PostgreSQL's `date_trunc` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Day,
    Week,
    Month,
}

impl Bucket {
    pub fn sql(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Week => "week",
            Self::Month => "month",
        }
    }

    pub fn parse(text: &str) -> Result<Self, Invalid> {
        match text {
            "" | "day" => Ok(Self::Day),
            "week" => Ok(Self::Week),
            "month" => Ok(Self::Month),
            other => Err(invalid(format!(
                "bucket must be day, week or month, got {other:?}"
            ))),
        }
    }
}

/// A checked report request.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportQuery {
    pub period: Period,
    pub area: String,
    pub bucket: Bucket,
}

pub fn report_query(request: &ReportRequest) -> Result<ReportQuery, Invalid> {
    let period = period(request.from.as_ref(), request.to.as_ref())?;
    report_checked(
        period,
        &request.area_id,
        match ReportBucket::try_from(request.bucket) {
            Ok(ReportBucket::Unspecified | ReportBucket::Day) => Bucket::Day,
            Ok(ReportBucket::Week) => Bucket::Week,
            Ok(ReportBucket::Month) => Bucket::Month,
            Err(_) => return Err(invalid(format!("`bucket` has no value {}", request.bucket))),
        },
    )
}

pub fn report_checked(period: Period, area: &str, bucket: Bucket) -> Result<ReportQuery, Invalid> {
    if period.to - period.from > MAX_REPORT_DAYS * DAY_MS {
        return Err(invalid(format!(
            "a report covers at most {MAX_REPORT_DAYS} days; split the period"
        )));
    }
    Ok(ReportQuery {
        period,
        area: area.trim().to_owned(),
        bucket,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use helpgrid_common::time::to_timestamp;

    fn request(from: i64, to: i64) -> ListHistoryRequest {
        ListHistoryRequest {
            from: Some(to_timestamp(from)),
            to: Some(to_timestamp(to)),
            ..ListHistoryRequest::default()
        }
    }

    #[test]
    fn a_period_needs_both_ends_in_order() {
        assert!(history_query(&request(5, 5)).is_err_and(|e| e.0.contains("before `to`")));
        let mut no_from = request(1, 2);
        no_from.from = None;
        assert!(history_query(&no_from).is_err_and(|e| e.0.contains("`from` is required")));
        assert_eq!(history_query(&request(1, 2)).map(|q| q.page_size), Ok(100));
    }

    #[test]
    fn kinds_filters_and_page_sizes_are_checked() {
        let mut r = request(1, 2);
        r.press_kind = PressKind::Urgent as i32;
        assert_eq!(
            history_query(&r).map(|q| q.kind),
            Ok(Some("button:urgent".to_owned()))
        );
        r.camera_label = CameraLabel::Fire as i32;
        assert!(history_query(&r).is_err());
        let mut r = request(1, 2);
        r.state = 99;
        assert!(history_query(&r).is_err_and(|e| e.0.contains("`state` has no value 99")));
        let mut r = request(1, 2);
        r.page_size = 5000;
        assert!(history_query(&r).is_err_and(|e| e.0.contains("at most 1000")));
    }

    #[test]
    fn page_tokens_round_trip_and_garbage_is_refused() {
        let cursor = Cursor {
            opened_at: 1_764_000_000_123,
            incident_id: "inc:7".into(),
        };
        assert_eq!(Cursor::decode(&cursor.encode()), Ok(cursor));
        assert!(Cursor::decode("zz").is_err());
        assert!(Cursor::decode("abc").is_err());
    }

    #[test]
    fn reports_cover_at_most_four_hundred_days() {
        let long = ReportRequest {
            from: Some(to_timestamp(0)),
            to: Some(to_timestamp(401 * DAY_MS)),
            ..ReportRequest::default()
        };
        assert!(report_query(&long).is_err_and(|e| e.0.contains("at most 400 days")));
    }
}
