use super::*;

fn reference() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("station.toml")).unwrap()
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/station/station.toml"))
}

#[test]
fn the_reference_file_parses() {
    let c = parse(&reference()).unwrap();
    assert_eq!(c.station_id, "station-01");
    assert_eq!(c.data_dir, Path::new("/etc/station/data"));
    assert_eq!(c.slots.len(), 2);
    assert!(
        matches!(&c.slots[0].link, SlotLink::Serial { device, baud: 115200 } if device == "/dev/ttyUSB0")
    );
    assert_eq!(
        c.ca_key_path(),
        Path::new("/etc/station/data/ca/factory-ca.key")
    );
    assert_eq!(c.timing.attempts, 3);
}

const S1: &str =
    "[[slot]]\nid = 1\nlink = \"serial\"\ndevice = \"/dev/ttyUSB0\"\nkeygen = \"board\"\n";

fn with(edit: impl Fn(String) -> String) -> String {
    let e = parse(&edit(reference())).unwrap_err();
    e.to_string()
}

#[test]
fn bad_values_name_file_key_and_reason() {
    type Edit = Box<dyn Fn(String) -> String>;
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|s| s.replace("id = \"station-01\"", "id = \"station 01\"")),
            "station.id",
        ),
        (
            Box::new(|s| s.replace("127.0.0.1:8080", "localhost")),
            "station.listen",
        ),
        (
            Box::new(|s| s.replace("key = \"file\"", "key = \"hsm\"")),
            "ca.key",
        ),
        (
            Box::new(|s| s.replace("leaf_validity_days = 7300", "leaf_validity_days = 0")),
            "ca.leaf_validity_days",
        ),
        (
            Box::new(|s| s.replace("attempts = 3", "attempts = 0")),
            "jig.attempts",
        ),
        (
            Box::new(|s| s.replace("timeout_ms = 2000", "timeout_ms = 1")),
            "jig.timeout_ms",
        ),
        (
            Box::new(|s| s.replace("baud = 115200\nkeygen", "baud = 12345\nkeygen")),
            "slot[1].baud",
        ),
        (Box::new(|s| s.replace("id = 2", "id = 1")), "slot[1].id"),
        (
            Box::new(|s| s.replace("/dev/ttyUSB1", "/dev/ttyUSB0")),
            "slot[1].device",
        ),
        (
            Box::new(|s| s.replace(S1, &S1.replace("keygen = \"board\"", "keygen = \"tpm\""))),
            "slot[0].keygen",
        ),
        (
            Box::new(|s| s.replace(S1, &S1.replace("keygen = \"board\"", "keygen = \"magic\""))),
            "slot[0].keygen",
        ),
        (
            Box::new(|s| s.replace(S1, &S1.replace("link = \"serial\"", "link = \"usb\""))),
            "slot[0].link",
        ),
        (
            Box::new(|s| s.replace(S1, &S1.replace("device = \"/dev/ttyUSB0\"\n", ""))),
            "slot[0].device",
        ),
    ];
    assert!(reference().contains(S1));
    for (edit, key) in cases {
        let msg = with(edit);
        assert!(msg.starts_with("/etc/station/station.toml: "), "{msg}");
        assert!(
            msg.contains(&format!(": {key}: ")),
            "expected {key} in {msg}"
        );
    }
}

#[test]
fn unknown_keys_are_refused_with_their_line() {
    let msg = with(|s| s.replace("[jig]\n", "[jig]\ntimeuot_ms = 5\n"));
    assert!(msg.contains("timeuot_ms"), "{msg}");
    assert!(msg.contains(": line "), "{msg}");
    let msg = with(|s| s + "\n[printer]\nbackend = \"tcp\"\n");
    assert!(msg.contains("printer"), "{msg}");
}

#[test]
fn simulated_slots_and_faults() {
    let text = reference().replace(
        "link = \"serial\"\ndevice = \"/dev/ttyUSB0\"",
        "link = \"simulated\"\nfault = \"corrupt@KEYGEN\"\nfault_times = 1",
    );
    let c = parse(&text).unwrap();
    match &c.slots[0].link {
        SlotLink::Simulated(o) => {
            assert_eq!(
                o.fault,
                Some(Fault::Corrupt {
                    verb: "KEYGEN".into()
                })
            );
            assert_eq!(o.fault_times, Some(1));
        }
        other => panic!("{other:?}"),
    }
    let msg = with(|s| {
        s.replace(
            "link = \"serial\"\ndevice = \"/dev/ttyUSB0\"",
            "link = \"simulated\"\nfault = \"melt\"",
        )
    });
    assert!(
        msg.contains("slot[0].fault") && msg.contains("known faults"),
        "{msg}"
    );
}

#[test]
fn demo_replaces_slots() {
    let mut c = parse(&reference()).unwrap();
    c.use_demo_slots(4);
    assert_eq!(c.slots.len(), 4);
    assert!(
        c.slots
            .iter()
            .all(|s| matches!(s.link, SlotLink::Simulated(_)))
    );
}

#[test]
fn a_missing_file_is_named() {
    let e = Config::load(Path::new("/nonexistent/station.toml")).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("/nonexistent/station.toml: (file): cannot read it"),
        "{e}"
    );
}
