//! The Zebra host status (`~HS`) answer: three strings, each framed by STX
//! and ETX and followed by CR LF (ZPL II Programming Guide, `~HS`).
//!
//! String 1 is `aaa,b,c,dddd,eee,f,g,h,iii,j,k,l`: b paper out, c paused,
//! f buffer full, j corrupt RAM, k under temperature, l over temperature.
//! String 2 is `mmm,n,o,p,q,r,s,t,uuuuuuuu,v,www`: o head up, p ribbon out.
//! String 3 is `xxxx,y`. Newer firmware sends nothing at all while out of
//! media or ribbon, with the head open or overheated.

use super::PrintError;

const STX: u8 = 0x02;
const ETX: u8 = 0x03;

/// The flags of a host status answer that decide whether a label can print.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostStatus {
    pub paper_out: bool,
    pub paused: bool,
    pub buffer_full: bool,
    pub corrupt_ram: bool,
    pub under_temperature: bool,
    pub over_temperature: bool,
    pub head_up: bool,
    pub ribbon_out: bool,
}

impl HostStatus {
    /// Whether `buf` holds all three strings (ends after the third ETX).
    pub fn complete(buf: &[u8]) -> bool {
        buf.iter().filter(|b| **b == ETX).count() >= 3
    }

    /// Reads the answer. Errors say what is wrong with it.
    pub fn parse(buf: &[u8]) -> Result<HostStatus, String> {
        let mut strings = Vec::new();
        let mut rest = buf;
        while let Some(start) = rest.iter().position(|b| *b == STX) {
            let after = &rest[start + 1..];
            let Some(end) = after.iter().position(|b| *b == ETX) else {
                return Err("a status string has no ETX".into());
            };
            let text = std::str::from_utf8(&after[..end])
                .map_err(|_| "a status string is not text".to_string())?;
            strings.push(text.trim().to_string());
            rest = &after[end + 1..];
        }
        if strings.len() < 2 {
            return Err(format!(
                "expected three STX..ETX strings, got {}",
                strings.len()
            ));
        }
        let one: Vec<&str> = strings[0].split(',').map(str::trim).collect();
        let two: Vec<&str> = strings[1].split(',').map(str::trim).collect();
        if one.len() < 12 {
            return Err(format!("string 1 has {} fields, not 12", one.len()));
        }
        if two.len() < 11 {
            return Err(format!("string 2 has {} fields, not 11", two.len()));
        }
        let flag = |fields: &[&str], i: usize, name: &str| match fields[i] {
            "0" => Ok(false),
            "1" => Ok(true),
            other => Err(format!("the {name} flag is {other:?}, not 0 or 1")),
        };
        Ok(HostStatus {
            paper_out: flag(&one, 1, "paper out")?,
            paused: flag(&one, 2, "pause")?,
            buffer_full: flag(&one, 5, "buffer full")?,
            corrupt_ram: flag(&one, 9, "corrupt RAM")?,
            under_temperature: flag(&one, 10, "under temperature")?,
            over_temperature: flag(&one, 11, "over temperature")?,
            head_up: flag(&two, 2, "head up")?,
            ribbon_out: flag(&two, 3, "ribbon out")?,
        })
    }

    /// The problem an operator must fix before a label prints, most urgent
    /// first; `None` when the printer is ready.
    pub fn problem(&self, address: &str) -> Option<PrintError> {
        let address = address.to_string();
        let fault = |what: &str| PrintError::Fault {
            address: address.clone(),
            what: what.into(),
        };
        if self.head_up {
            Some(PrintError::HeadOpen { address })
        } else if self.paper_out {
            Some(PrintError::PaperOut { address })
        } else if self.ribbon_out {
            Some(PrintError::RibbonOut { address })
        } else if self.over_temperature {
            Some(fault("print head too hot"))
        } else if self.under_temperature {
            Some(fault("print head too cold"))
        } else if self.corrupt_ram {
            Some(fault("configuration lost"))
        } else if self.paused {
            Some(PrintError::Paused { address })
        } else if self.buffer_full {
            Some(fault("receive buffer full"))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(one: &str, two: &str) -> Vec<u8> {
        format!("\x02{one}\x03\r\n\x02{two}\x03\r\n\x021234,0\x03\r\n").into_bytes()
    }

    const READY_1: &str = "030,0,0,0240,000,0,0,0,000,0,0,0";
    const READY_2: &str = "001,0,0,0,1,2,6,0,00000000,1,000";

    #[test]
    fn ready_and_each_flag() {
        let ok = answer(READY_1, READY_2);
        assert!(HostStatus::complete(&ok));
        assert_eq!(HostStatus::parse(&ok).unwrap(), HostStatus::default());
        let paper = answer("030,1,0,0240,000,0,0,0,000,0,0,0", READY_2);
        let s = HostStatus::parse(&paper).unwrap();
        assert!(s.paper_out);
        assert_eq!(s.problem("p").unwrap().code(), "paper_out");
        let head = answer(READY_1, "001,0,1,0,1,2,6,0,00000000,1,000");
        assert_eq!(
            HostStatus::parse(&head)
                .unwrap()
                .problem("p")
                .unwrap()
                .code(),
            "head_open"
        );
        let ribbon = answer(READY_1, "001,0,0,1,1,2,6,0,00000000,1,000");
        assert_eq!(
            HostStatus::parse(&ribbon)
                .unwrap()
                .problem("p")
                .unwrap()
                .code(),
            "ribbon_out"
        );
        let paused = answer("030,0,1,0240,000,0,0,0,000,0,0,0", READY_2);
        assert_eq!(
            HostStatus::parse(&paused)
                .unwrap()
                .problem("p")
                .unwrap()
                .code(),
            "paused"
        );
        let hot = answer("030,0,0,0240,000,0,0,0,000,0,0,1", READY_2);
        assert!(
            HostStatus::parse(&hot)
                .unwrap()
                .problem("p")
                .unwrap()
                .to_string()
                .contains("too hot")
        );
    }

    #[test]
    fn unreadable_answers_say_why() {
        assert!(!HostStatus::complete(b"\x02abc\x03"));
        let cases: [(&[u8], &str); 4] = [
            (b"hello", "got 0"),
            (b"\x02abc", "no ETX"),
            (&answer("1,2", READY_2), "string 1 has 2 fields"),
            (
                &answer("030,x,0,0240,000,0,0,0,000,0,0,0", READY_2),
                "paper out flag",
            ),
        ];
        for (buf, want) in cases {
            let e = HostStatus::parse(buf).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
    }
}
