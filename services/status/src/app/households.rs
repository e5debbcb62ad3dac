//! The household directory the app shows to the responder on the way: who lives there, how
//! to call them, where the door is. A CSV file the operator keeps (`--households-file`),
//! read at start-up; the incidents themselves carry only the household id. Pure parsing.
//!
//! Format, one household per line, `#` starts a comment line:
//! `household_id,contact_name,contact_phone,address` — the address is last, so it may
//! contain commas.

use super::view::{Household, Households};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HouseholdsError {
    #[error("line {line}: expected household_id,contact_name,contact_phone,address, got {got:?}")]
    Malformed { line: usize, got: String },
    #[error("line {line}: household {id} is listed twice")]
    Duplicate { line: usize, id: String },
}

pub fn parse_households(text: &str) -> Result<Households, HouseholdsError> {
    let mut households = Households::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.splitn(4, ',').map(str::trim).collect();
        let [id, name, phone, address] = fields[..] else {
            return Err(HouseholdsError::Malformed {
                line: index + 1,
                got: line.chars().take(80).collect(),
            });
        };
        if id.is_empty() || id == "household_id" {
            continue;
        }
        let household = Household {
            contact_name: name.to_owned(),
            contact_phone: phone.to_owned(),
            address: address.to_owned(),
        };
        if households.insert(id.to_owned(), household).is_some() {
            return Err(HouseholdsError::Duplicate {
                line: index + 1,
                id: id.to_owned(),
            });
        }
    }
    Ok(households)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_with_a_header_comments_and_commas_in_addresses_parses() {
        let text = "household_id,contact_name,contact_phone,address\n\
                    # 安澜社区\n\
                    hh-0001-07, 吴建国, 13800138000, 安澜社区3栋2单元501, 东门进\n\n";
        let parsed = parse_households(text).expect("parses");
        let household = &parsed["hh-0001-07"];
        assert_eq!(household.contact_name, "吴建国");
        assert_eq!(household.address, "安澜社区3栋2单元501, 东门进");
    }

    #[test]
    fn short_lines_and_duplicates_are_refused_with_their_line() {
        assert_eq!(
            parse_households("hh-1,only a name"),
            Err(HouseholdsError::Malformed {
                line: 1,
                got: "hh-1,only a name".into()
            })
        );
        assert!(matches!(
            parse_households("hh-1,a,1,x\nhh-1,b,2,y"),
            Err(HouseholdsError::Duplicate { line: 2, .. })
        ));
    }
}
