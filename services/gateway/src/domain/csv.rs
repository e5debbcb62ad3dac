//! Bulk registration from CSV: a community registers hundreds of households at once.
//!
//! Columns (header row required, in any order; unknown columns are an error so a typo is
//! not silently ignored): `device_id, kind, grid_id` (required), `household_id`,
//! `camera_post`, `latitude`, `longitude`, `enabled` (default true), `credential_ref`,
//! `mqtt_name`, `model`. Fields may be double-quoted (`"a, b"`, `""` for a quote).

use super::registry::{check_device, kind_from_word};
use helpgrid_proto::pb::{Device, GeoPoint};

const COLUMNS: &[&str] = &[
    "device_id",
    "kind",
    "grid_id",
    "household_id",
    "camera_post",
    "latitude",
    "longitude",
    "enabled",
    "credential_ref",
    "mqtt_name",
    "model",
];

/// A row that cannot be imported, with its 1-based line number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct RowError {
    pub line: usize,
    pub reason: String,
}

/// Splits one CSV line, honouring double quotes.
fn split_line(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => fields.push(std::mem::take(&mut field)),
            (false, c) => field.push(c),
        }
    }
    if quoted {
        return Err("unterminated quote".into());
    }
    fields.push(field);
    Ok(fields.into_iter().map(|f| f.trim().to_owned()).collect())
}

/// Parses a whole file: every good row, and every bad row's reason (nothing is skipped
/// silently; the importer writes nothing if any row is bad).
pub fn parse_devices(text: &str) -> (Vec<Device>, Vec<RowError>) {
    let mut devices = Vec::new();
    let mut errors = Vec::new();
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
    let Some((header_idx, header)) = lines.next() else {
        errors.push(RowError {
            line: 1,
            reason: "the file has no header row".into(),
        });
        return (devices, errors);
    };
    let header = match split_line(header) {
        Ok(h) => h,
        Err(reason) => {
            errors.push(RowError {
                line: header_idx + 1,
                reason,
            });
            return (devices, errors);
        }
    };
    for name in &header {
        if !COLUMNS.contains(&name.as_str()) {
            errors.push(RowError {
                line: header_idx + 1,
                reason: format!("unknown column {name:?} (known: {})", COLUMNS.join(", ")),
            });
        }
    }
    for required in ["device_id", "kind", "grid_id"] {
        if !header.iter().any(|h| h == required) {
            errors.push(RowError {
                line: header_idx + 1,
                reason: format!("column {required:?} is required"),
            });
        }
    }
    if !errors.is_empty() {
        return (devices, errors);
    }
    let mut seen = std::collections::HashSet::new();
    for (idx, line) in lines {
        let line_no = idx + 1;
        match parse_row(&header, line) {
            Ok(d) if !seen.insert(d.device_id.clone()) => errors.push(RowError {
                line: line_no,
                reason: format!("device {} appears twice", d.device_id),
            }),
            Ok(d) => devices.push(d),
            Err(reason) => errors.push(RowError {
                line: line_no,
                reason,
            }),
        }
    }
    (devices, errors)
}

fn parse_row(header: &[String], line: &str) -> Result<Device, String> {
    let fields = split_line(line)?;
    if fields.len() != header.len() {
        return Err(format!(
            "{} fields, the header has {}",
            fields.len(),
            header.len()
        ));
    }
    let get = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .map(|i| fields[i].as_str())
            .unwrap_or("")
    };
    let kind = kind_from_word(get("kind")).ok_or_else(|| {
        format!(
            "kind {:?} is not one of zigbee_button, http_button, frigate_camera, http_camera",
            get("kind")
        )
    })?;
    let location = match (get("latitude"), get("longitude")) {
        ("", "") => None,
        (lat, lon) => Some(GeoPoint {
            latitude: lat
                .parse()
                .map_err(|_| format!("latitude {lat:?} is not a number"))?,
            longitude: lon
                .parse()
                .map_err(|_| format!("longitude {lon:?} is not a number"))?,
        }),
    };
    let enabled = match get("enabled").to_ascii_lowercase().as_str() {
        "" | "true" | "yes" | "1" => true,
        "false" | "no" | "0" => false,
        other => return Err(format!("enabled {other:?} is not true or false")),
    };
    let device = Device {
        device_id: get("device_id").to_owned(),
        kind: kind as i32,
        household_id: get("household_id").to_owned(),
        camera_post: get("camera_post").to_owned(),
        grid_id: get("grid_id").to_owned(),
        location,
        enabled,
        credential_ref: get("credential_ref").to_owned(),
        mqtt_name: get("mqtt_name").to_owned(),
        model: get("model").to_owned(),
    };
    check_device(&device)?;
    Ok(device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use helpgrid_proto::pb::DeviceKind;

    #[test]
    fn a_community_file_imports_buttons_and_cameras() {
        let text = "device_id,kind,grid_id,household_id,camera_post,latitude,longitude,enabled,credential_ref,mqtt_name,model\n\
            # the Wu household's hall button\n\
            btn-0001,zigbee_button,g-17,h-0001,,32.68,109.02,true,,\"hall, button\",WXKG11LM\n\
            cell-0002,http_button,g-17,h-0002,,,,,cred-0002,,\n\
            cam-gate,frigate_camera,g-17,,post-gate-east,,,no,,gate_east,\n";
        let (devices, errors) = parse_devices(text);
        assert_eq!(errors, []);
        assert_eq!(devices.len(), 3);
        assert_eq!(devices[0].mqtt_name, "hall, button");
        assert_eq!(devices[0].kind, DeviceKind::ZigbeeButton as i32);
        assert_eq!(devices[0].location.map(|p| p.latitude), Some(32.68));
        assert!(devices[1].enabled);
        assert!(!devices[2].enabled);
        assert_eq!(devices[2].camera_post, "post-gate-east");
    }

    #[test]
    fn every_bad_row_is_reported_with_its_line() {
        let text = "device_id,kind,grid_id,household_id\n\
            b1,zigbee_button,g1,h1\n\
            b2,toaster,g1,h2\n\
            b3,zigbee_button,g1\n\
            b4,zigbee_button,g1,\n\
            b1,zigbee_button,g1,h1\n\
            b5,zigbee_button,g1,\"h5\n";
        let (devices, errors) = parse_devices(text);
        assert_eq!(devices.len(), 1);
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [3, 4, 5, 6, 7], "{errors:?}");
        assert!(errors[0].reason.contains("toaster"));
        assert!(errors[2].reason.contains("household_id"));
        assert!(errors[3].reason.contains("twice"));
        assert!(errors[4].reason.contains("quote"));
    }

    #[test]
    fn a_header_with_a_typo_or_missing_column_imports_nothing() {
        let (d, e) = parse_devices("device_id,kind,grid,household_id\nb,zigbee_button,g,h\n");
        assert!(d.is_empty());
        assert!(e.iter().any(|e| e.reason.contains("\"grid\"")));
        assert!(e.iter().any(|e| e.reason.contains("grid_id")));
        let (d, e) = parse_devices("");
        assert!(d.is_empty() && e.len() == 1);
    }
}
