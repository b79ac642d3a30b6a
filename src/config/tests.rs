use super::*;
use crate::sim::Fault;

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
    assert_eq!(c.timing.attempts, 8);
    assert_eq!(c.piece_bytes, 256);
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
            Box::new(|s| s.replace("attempts = 8", "attempts = 0")),
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
            "slot[0].tcti",
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
    let msg = with(|s| s + "\n[erp]\nbackend = \"tcp\"\n");
    assert!(msg.contains("erp"), "{msg}");
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

/// The reference file without its `[dps]` table, for tests that write their own.
fn base() -> String {
    let r = reference();
    r[..r.find("\n[dps]\n").unwrap()].to_string()
}

const DPS_CS: &str = "HostName=MyDps.azure-devices-provisioning.net;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=c2VjcmV0IGtleQ==";

#[test]
fn dps_defaults_and_the_environment_variable_wins() {
    let c = parse(&base()).unwrap();
    assert!(c.dps.connection.is_none() && c.dps.endpoint.is_none());
    assert_eq!(c.dps.ops_per_minute, 1000);

    let text = base() + &format!("\n[dps]\nconnection_string = \"{DPS_CS}\"\n");
    let c = parse(&text).unwrap();
    assert_eq!(
        c.dps.endpoint.as_deref(),
        Some("https://mydps.azure-devices-provisioning.net")
    );
    assert!(!c.dps.connection_from_env);

    let env = DPS_CS.replace("MyDps", "other");
    let c = Config::parse_with_env(&text, Path::new("/s.toml"), Some(env)).unwrap();
    assert_eq!(
        c.dps.connection.unwrap().host,
        "other.azure-devices-provisioning.net"
    );
    assert!(c.dps.connection_from_env);
}

#[test]
fn dps_bad_values_are_refused_without_showing_the_key() {
    let cases = [
        (
            "connection_string = \"HostName=x;SharedAccessKeyName=p\"",
            "dps.connection_string",
            "SharedAccessKey",
        ),
        (
            "endpoint = \"http://10.1.2.3:8080\"",
            "dps.endpoint",
            "loopback",
        ),
        (
            "endpoint = \"ftp://127.0.0.1\"",
            "dps.endpoint",
            "not https",
        ),
        ("ops_per_minute = 0", "dps.ops_per_minute", "between"),
        (
            "allocation_policy = \"static\"",
            "dps.iot_hubs",
            "exactly one hub",
        ),
        (
            "allocation_policy = \"random\"",
            "dps.allocation_policy",
            "hashed",
        ),
    ];
    for (line, key, words) in cases {
        let msg = parse(&(base() + &format!("\n[dps]\n{line}\n")))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains(&format!(": {key}: ")) && msg.contains(words),
            "{line}: {msg}"
        );
    }
    for ok in [
        "endpoint = \"http://127.0.0.1:9000\"",
        "endpoint = \"http://localhost:9000/\"",
        "endpoint = \"http://[::1]:9000\"",
    ] {
        assert!(
            parse(&(base() + &format!("\n[dps]\n{ok}\n"))).is_ok(),
            "{ok}"
        );
    }
    let bad_key = DPS_CS.replace("c2VjcmV0IGtleQ==", "s3cr3t*not*base64");
    let msg = Config::parse_with_env(&base(), Path::new("/s.toml"), Some(bad_key))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("STATION_DPS_CONNECTION_STRING") && !msg.contains("s3cr3t"),
        "{msg}"
    );
}

#[test]
fn dps_tags_and_desired_properties() {
    let text = base().replace(
        "line = \"line-1\"",
        "line = \"line-1\"\nwork_order = \"WO-42\"",
    ) + "\n[dps]\nallocation_policy = \"static\"\niot_hubs = [\"hub1.azure-devices.net\"]\n[dps.desired_properties]\ntelemetryInterval = 60\n";
    let c = parse(&text).unwrap();
    assert_eq!(c.work_order.as_deref(), Some("WO-42"));
    assert_eq!(c.dps.desired_properties["telemetryInterval"], 60);
    assert_eq!(c.dps.iot_hubs, ["hub1.azure-devices.net"]);
}

#[test]
fn label_and_printer_defaults() {
    let c = parse(&base()).unwrap();
    assert_eq!(
        c.printer.backend,
        PrinterBackend::Spool {
            dir: PathBuf::from("/etc/station/data/labels")
        }
    );
    assert_eq!(c.label.template_origin, "built-in reference");
    let size = c.label.labeler.template.size();
    assert_eq!((size.width_mm, size.height_mm, size.dpmm), (60.0, 30.0, 8));
    assert!(!c.label.scan_back);
    let c = parse(&reference()).unwrap();
    assert!(matches!(c.printer.backend, PrinterBackend::Spool { .. }));

    let text = base()
        + "\n[printer]\nbackend = \"tcp\"\naddress = \"10.0.0.7:9100\"\n\n[label]\nwidth_mm = 50.8\nheight_mm = 25.4\ndensity_dpmm = 12\nscan_back = true\n[label.fields]\nsite = \"Plant 2\"\n";
    let c = parse(&text).unwrap();
    assert_eq!(
        c.printer.backend,
        PrinterBackend::Tcp {
            address: "10.0.0.7:9100".into()
        }
    );
    assert_eq!(c.label.labeler.template.size().width_dots(), 610);
    assert!(c.label.scan_back);
    let c = parse(&(base() + "\n[printer]\nbackend = \"cups\"\nqueue = \"zebra-1\"\n")).unwrap();
    assert_eq!(
        c.printer.backend,
        PrinterBackend::Cups {
            queue: "zebra-1".into()
        }
    );
}

#[test]
fn bad_label_and_printer_values_are_named() {
    let cases = [
        (
            "[printer]\nbackend = \"usb\"",
            "printer.backend",
            "not \"tcp\"",
        ),
        (
            "[printer]\nbackend = \"tcp\"",
            "printer.address",
            "host:port",
        ),
        (
            "[printer]\nbackend = \"tcp\"\naddress = \"printer\"",
            "printer.address",
            "host:port",
        ),
        (
            "[printer]\nbackend = \"tcp\"\naddress = \"p:9100\"\nqueue = \"q\"",
            "printer.queue",
            "not used",
        ),
        (
            "[printer]\nbackend = \"cups\"",
            "printer.queue",
            "queue name",
        ),
        (
            "[printer]\nbackend = \"cups\"\nqueue = \"a b\"",
            "printer.queue",
            "queue name",
        ),
        ("[printer]\nspool_dir = \"\"", "printer.spool_dir", "empty"),
        ("[printer]\ntimeout_ms = 5", "printer.timeout_ms", "between"),
        (
            "[printer]\nretry_max_seconds = 0",
            "printer.retry_max_seconds",
            "between",
        ),
        (
            "[label]\ndensity_dpmm = 7",
            "label.density_dpmm",
            "6, 8, 12 or 24",
        ),
        ("[label]\nwidth_mm = 2", "label.width_mm", "between"),
        ("[label]\nheight_mm = 2000", "label.height_mm", "between"),
        (
            "[label.fields]\nguid = \"x\"",
            "label.fields.guid",
            "not a built-in",
        ),
        (
            "[label.fields]\n\"Site Name\" = \"x\"",
            "label.fields.Site Name",
            "lower-case",
        ),
        (
            "[label]\ntemplate = \"missing.zpl\"",
            "label.template",
            "cannot read /etc/station/missing.zpl",
        ),
        ("[label]\ncolour = \"red\"", "line", "unknown field"),
    ];
    for (extra, key, reason) in cases {
        let e = parse(&format!("{}\n{extra}\n", base()))
            .unwrap_err()
            .to_string();
        assert!(e.contains(key) && e.contains(reason), "{extra}: {e}");
    }
}

#[test]
fn a_broken_template_file_is_named_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("label.zpl"),
        "^XA\n^FO0,0^BXN,4,200^FH^FD{{guid}}^FS\n^FO0,40^FH^FD{{lot_number}}^FS\n^XZ\n",
    )
    .unwrap();
    let path = dir.path().join("station.toml");
    let text = base() + "\n[label]\ntemplate = \"label.zpl\"\n";
    let e = Config::parse(&text, &path).unwrap_err().to_string();
    assert!(e.contains("label.template"), "{e}");
    assert!(
        e.contains("label.zpl line 3: {{lot_number}} is not a label field"),
        "{e}"
    );
}

#[test]
fn keygen_modes_and_tpm_keys() {
    let tpm = "[[slot]]\nid = 1\nlink = \"serial\"\ndevice = \"/dev/ttyUSB0\"\nkeygen = \"tpm\"\ntcti = \"device:/dev/tpmrm0\"\nkey_handle = 0x81010002\n";
    let c = parse(&reference().replace(S1, tpm)).unwrap();
    assert_eq!(
        c.slots[0].keygen,
        Keygen::Tpm(TpmKeys {
            tcti: Some("device:/dev/tpmrm0".into()),
            key_handle: 0x8101_0002,
            cert_nv_index: 0x0150_0001,
            settings_nv_index: 0x0150_0002,
        })
    );
    let c = parse(&reference().replace(S1, &S1.replace("\"board\"", "\"station\""))).unwrap();
    assert_eq!(c.slots[0].keygen, Keygen::Station);
    // A simulated TPM slot gets a swtpm of its own.
    let sim = "[[slot]]\nid = 1\nlink = \"simulated\"\nkeygen = \"tpm\"\n";
    let c = parse(&reference().replace(S1, sim)).unwrap();
    assert!(matches!(&c.slots[0].keygen, Keygen::Tpm(t) if t.tcti.is_none()));

    let cases = [
        (
            tpm.replace("0x81010002", "0x01010002"),
            "slot[0].key_handle",
            "owner persistent handle",
        ),
        (
            format!("{tpm}cert_nv_index = 0x81000000\n"),
            "slot[0].cert_nv_index",
            "not an NV index",
        ),
        (
            tpm.replace("device:/dev/tpmrm0", "device /dev/tpm"),
            "slot[0].tcti",
            "not a TCTI",
        ),
        (
            format!("{tpm}settings_nv_index = 0x81000000\n"),
            "slot[0].settings_nv_index",
            "not an NV index",
        ),
        (
            format!("{tpm}settings_nv_index = 0x01500001\n"),
            "slot[0].settings_nv_index",
            "also cert_nv_index",
        ),
        (
            S1.replace(
                "keygen = \"board\"",
                "keygen = \"board\"\ntcti = \"device:/dev/tpmrm0\"",
            ),
            "slot[0].tcti",
            "for keygen = \"tpm\"",
        ),
    ];
    for (slot, key, reason) in cases {
        let e = parse(&reference().replace(S1, &slot))
            .unwrap_err()
            .to_string();
        assert!(e.contains(key) && e.contains(reason), "{slot}: {e}");
    }
    let e = parse(&(base() + "\n[dps]\nattestation = \"tpm\"\n"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("dps.attestation") && e.contains("every slot"),
        "{e}"
    );
    let e = parse(&(base() + "\n[dps]\nattestation = \"sym\"\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("dps.attestation"), "{e}");
    // The registration settings, symmetric keys and group enrollment.
    for (dps, key, reason) in [
        ("id_scope = \"0ne 00\"", "dps.id_scope", "not an ID scope"),
        (
            "global_endpoint = \"https://global.azure-devices-provisioning.net\"",
            "dps.global_endpoint",
            "no https://",
        ),
        (
            "enrollment = \"group\"",
            "dps.enrollment",
            "for attestation = \"symmetric_key\"",
        ),
        (
            "enrollment = \"bulk\"",
            "dps.enrollment",
            "not \"individual\" or \"group\"",
        ),
        (
            "enrollment_group_id = \"g1\"",
            "dps.enrollment_group_id",
            "is for enrollment = \"group\"",
        ),
        (
            "attestation = \"symmetric_key\"\nenrollment = \"group\"\nenrollment_group_id = \"-bad id\"",
            "dps.enrollment_group_id",
            "not an enrollment group id",
        ),
        (
            "attestation = \"symmetric_key\"\ntpm_registration_id = \"dps\"",
            "dps.tpm_registration_id",
            "registration id is the GUID",
        ),
    ] {
        let e = parse(&(base() + "\n[dps]\n" + dps + "\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(key) && e.contains(reason), "{dps}: {e}");
    }
    let c = parse(&(base() + "\n[dps]\nid_scope = \"0ne00A1B2C3\"\nattestation = \"symmetric_key\"\nenrollment = \"group\"\n")).unwrap();
    assert_eq!(c.dps.id_scope.as_deref(), Some("0ne00A1B2C3"));
    assert_eq!(
        c.dps.global_endpoint,
        crate::config::DEFAULT_GLOBAL_ENDPOINT
    );
    assert_eq!(c.dps.attestation, Attestation::SymmetricKey);
    assert_eq!(c.dps.enrollment, crate::config::Enrollment::Group);
    assert_eq!(c.dps.enrollment_group_id, None);
    assert_eq!(
        crate::config::group_id_for_line("Line 3 / Hall B"),
        "line-line-3-hall-b"
    );
    assert!(crate::config::is_registration_id("line-line-3-hall-b"));
    let tpm_slots = base().replace(
        S1,
        &format!("{S1}tcti = \"device:/dev/tpmrm0\"\n")
            .replace("keygen = \"board\"", "keygen = \"tpm\""),
    );
    let e = parse(&(tpm_slots + "\n[dps]\nattestation = \"symmetric_key\"\n"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("dps.attestation") && e.contains("keygen = \"tpm\""),
        "{e}"
    );
    let e = parse(&(base() + "\n[dps]\ntpm_registration_id = \"dps\"\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("dps.tpm_registration_id"), "{e}");
    let e = parse(&reference().replace("keygen = \"board\"\n\n[ui]", "keygen = \"hsm\"\n\n[ui]"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("demo.keygen"), "{e}");
}

#[test]
fn reports_offset_and_shifts() {
    let c = parse(&reference()).unwrap();
    assert_eq!(c.reports.utc_offset, time::UtcOffset::UTC);
    assert!(c.reports.shifts.is_empty());
    let text = reference().replace("utc_offset = \"+00:00\"", "utc_offset = \"+01:00\"")
        + "\n[[shift]]\nname = \"early\"\nstart = \"06:00\"\nend = \"14:00\"\n";
    let c = parse(&text).unwrap();
    assert_eq!(c.reports.utc_offset.whole_hours(), 1);
    assert_eq!(c.reports.shifts[0].name, "early");
    let cases = [
        (
            reference().replace("utc_offset = \"+00:00\"", "utc_offset = \"CET\""),
            "reports.utc_offset",
        ),
        (
            reference() + "\n[[shift]]\nname = \"early\"\nstart = \"6\"\nend = \"14:00\"\n",
            "shift[0].start",
        ),
        (
            reference() + "\n[[shift]]\nname = \"a b\"\nstart = \"06:00\"\nend = \"14:00\"\n",
            "shift[0].name",
        ),
        (
            reference()
                + "\n[[shift]]\nname = \"x\"\nstart = \"06:00\"\nend = \"14:00\"\n[[shift]]\nname = \"x\"\nstart = \"14:00\"\nend = \"22:00\"\n",
            "defined twice",
        ),
    ];
    for (text, want) in cases {
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains(want), "{e}");
    }
}

#[test]
fn ca_backends_and_their_mistakes() {
    let c = parse(&reference()).unwrap();
    assert_eq!(c.ca.backend, CaBackend::File);
    assert_eq!(c.ca.expiry_warning_days, 30);

    let pkcs11 = reference().replace("key = \"file\"", "key = \"pkcs11\"")
        + "\n[ca.pkcs11]\nmodule = \"/usr/lib/softhsm/libsofthsm2.so\"\ntoken_label = \"station-ca\"\nkey_label = \"ca-key\"\npin_file = \"hsm.pin\"\n";
    let c = parse(&pkcs11).unwrap();
    assert_eq!(
        c.ca.backend,
        CaBackend::Pkcs11(Pkcs11Config {
            module: "/usr/lib/softhsm/libsofthsm2.so".into(),
            token_label: "station-ca".into(),
            key_label: "ca-key".into(),
            pin_file: Some("hsm.pin".into()),
        })
    );
    assert_eq!(c.public_view()["ca"]["key"], "pkcs11");
    assert_eq!(c.public_view()["ca"]["pkcs11"]["pin_from_file"], true);
    assert!(c.public_view()["ca"]["key_file"].is_null());

    let tpm = reference().replace("key = \"file\"", "key = \"tpm\"")
        + "\n[ca.tpm]\ntcti = \"device:/dev/tpmrm0\"\n";
    let c = parse(&tpm).unwrap();
    assert_eq!(
        c.ca.backend,
        CaBackend::Tpm(CaTpmConfig {
            tcti: "device:/dev/tpmrm0".into(),
            handle: DEFAULT_CA_TPM_HANDLE,
        })
    );
    assert_eq!(c.public_view()["ca"]["tpm"]["handle"], "0x81010100");

    let cases: Vec<(String, &str, &str)> = vec![
        (
            reference().replace("key = \"file\"", "key = \"pkcs11\""),
            "ca.pkcs11",
            "needs a [ca.pkcs11] section",
        ),
        (
            reference().replace("key = \"file\"", "key = \"tpm\""),
            "ca.tpm",
            "tcti of the station's TPM",
        ),
        (
            reference() + "\n[ca.tpm]\ntcti = \"device:/dev/tpmrm0\"\n",
            "ca.key",
            "set key = \"tpm\" or remove the section",
        ),
        (
            tpm.replace(
                "tcti = \"device:/dev/tpmrm0\"",
                "tcti = \"device /dev/tpmrm0\"",
            ),
            "ca.tpm.tcti",
            "is not a TCTI string",
        ),
        (
            tpm.clone() + "handle = 0x01000000\n",
            "ca.tpm.handle",
            "not an owner persistent handle",
        ),
        (
            pkcs11.replace("token_label = \"station-ca\"", "token_label = \"\""),
            "ca.pkcs11.token_label",
            "must not be empty",
        ),
        (
            pkcs11.replace(
                "token_label = \"station-ca\"",
                &format!("token_label = \"{}\"", "t".repeat(33)),
            ),
            "ca.pkcs11.token_label",
            "longer than 32 characters",
        ),
        (
            if reference().contains("\nexpiry_warning_days = 30") {
                reference().replace("\nexpiry_warning_days = 30", "\nexpiry_warning_days = 9999")
            } else {
                reference().replace(
                    "leaf_validity_days = 7300",
                    "leaf_validity_days = 7300\nexpiry_warning_days = 9999",
                )
            },
            "ca.expiry_warning_days",
            "at most 3650",
        ),
    ];
    for (text, key, words) in cases {
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains(key) && e.contains(words), "{key}: {e}");
    }
}

fn plant(section: &str, env: Option<&str>) -> Result<Config, ConfigError> {
    Config::parse_with_envs(
        &(base() + section),
        Path::new("/s.toml"),
        None,
        env.map(str::to_string),
    )
}

#[test]
fn without_plant_a_station_stands_alone() {
    assert!(parse(&base()).unwrap().plant.is_none());
    assert!(parse(&base()).unwrap().public_view()["plant"].is_null());
}

#[test]
fn the_plant_section_is_read_with_its_defaults() {
    let c = plant(
        "\n[plant]\ndatabase_url = \"postgres://station:s3cret-pw@plant-db:5433/plant\"\n",
        None,
    )
    .unwrap();
    let p = c.plant.clone().unwrap();
    assert_eq!(p.batch, 500);
    assert_eq!(p.max_lag_warning, Duration::from_secs(60));
    assert_eq!(p.dps_ops_per_minute, None);
    assert!(!p.url_from_env);
    assert_eq!(p.shown_url(), "postgres://station@plant-db:5433/plant");
    // The password is in neither the view admins see nor any Debug.
    let view = c.public_view().to_string();
    assert!(
        view.contains("postgres://station@plant-db:5433/plant"),
        "{view}"
    );
    for shown in [view, format!("{c:?}"), format!("{p:?}")] {
        assert!(!shown.contains("s3cret-pw"), "{shown}");
    }
}

#[test]
fn the_plant_url_from_the_environment_wins() {
    let c = plant(
        "\n[plant]\ndatabase_url = \"postgres://file@a/plant\"\nbatch = 50\ndps_ops_per_minute = 900\n",
        Some("postgres://env:pw@b:6000/other"),
    )
    .unwrap();
    let p = c.plant.unwrap();
    assert!(p.url_from_env);
    assert_eq!(p.shown_url(), "postgres://env@b:6000/other");
    assert_eq!((p.batch, p.dps_ops_per_minute), (50, Some(900)));
    // The environment alone, with an empty [plant].
    let c = plant("\n[plant]\n", Some("postgres://env@b/plant")).unwrap();
    assert_eq!(c.plant.unwrap().shown_url(), "postgres://env@b:5432/plant");
}

#[test]
fn bad_plant_settings_are_named_without_the_password() {
    let cases = [
        ("\n[plant]\n", "plant.database_url", "is missing"),
        (
            "\n[plant]\ndatabase_url = \"mysql://u:hunter2@h/db\"\n",
            "plant.database_url",
            "is not a PostgreSQL URL",
        ),
        (
            "\n[plant]\ndatabase_url = \"postgres://u:hunter2@h\"\n",
            "plant.database_url",
            "names no database",
        ),
        (
            "\n[plant]\ndatabase_url = \"postgres://h/db\"\n",
            "plant.database_url",
            "names no user",
        ),
        (
            "\n[plant]\ndatabase_url = \"postgres://u@h/db\"\nbatch = 0\n",
            "plant.batch",
            "between 1 and 10000",
        ),
        (
            "\n[plant]\ndatabase_url = \"postgres://u@h/db\"\nmax_lag_warning_s = 0\n",
            "plant.max_lag_warning_s",
            "between 1 and 86400",
        ),
        (
            "\n[plant]\ndatabase_url = \"postgres://u@h/db\"\ndps_ops_per_minute = 0\n",
            "plant.dps_ops_per_minute",
            "between 1 and 100000",
        ),
    ];
    for (section, key, reason) in cases {
        let e = plant(section, None).unwrap_err();
        assert_eq!(e.key, key, "{section}: {e}");
        assert!(e.reason.contains(reason), "{section}: {e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }
    // A password with an '@' not percent-encoded: its tail would be taken
    // for the host and shown; refused without showing it.
    let e = plant(
        "\n[plant]\ndatabase_url = \"postgres://u:hun@ter2@h/db\"\n",
        None,
    )
    .unwrap_err();
    assert!(e.reason.contains("percent-encoded"), "{e}");
    assert!(!e.to_string().contains("ter2"), "{e}");
    // A key=value string whose parts tokio-postgres would quote.
    let e = plant(
        "\n[plant]\ndatabase_url = \"host=h password=hunter2 bogus=x\"\n",
        None,
    )
    .unwrap_err();
    assert!(
        !e.to_string().contains("hunter2") && !e.to_string().contains("bogus"),
        "{e}"
    );
    let e = plant("\n[plant]\n", Some("postgres://u:hunter2@h")).unwrap_err();
    assert_eq!(e.key, "STATION_PLANT_DATABASE_URL");
    assert!(!e.to_string().contains("hunter2"), "{e}");
    let e = plant("\n[plant]\ndatabase = \"x\"\n", None).unwrap_err();
    assert!(e.to_string().contains("unknown field"), "{e}");
}

#[test]
fn the_plant_ca_file_means_tls_only() {
    let mode = |p: &PlantConfig| format!("{:?}", p.database.get_ssl_mode());
    let c = plant(
        "\n[plant]\ndatabase_url = \"postgres://u@h/db\"\nca_file = \"plant-ca.pem\"\n",
        None,
    )
    .unwrap();
    let p = c.plant.clone().unwrap();
    assert_eq!(p.ca_file.as_deref(), Some(Path::new("/plant-ca.pem")));
    assert_eq!(mode(&p), "Require");
    assert_eq!(c.public_view()["plant"]["tls"], true);
    // Without it, plain: never a TLS attempt that cannot be checked.
    let p = plant("\n[plant]\ndatabase_url = \"postgres://u@h/db\"\n", None)
        .unwrap()
        .plant
        .unwrap();
    assert_eq!(mode(&p), "Disable");
    let e = plant(
        "\n[plant]\ndatabase_url = \"postgres://u@h/db?sslmode=require\"\n",
        None,
    )
    .unwrap_err();
    assert_eq!(e.key, "plant.ca_file");
    let e = plant(
        "\n[plant]\ndatabase_url = \"postgres://u@h/db?sslmode=disable\"\nca_file = \"ca.pem\"\n",
        None,
    )
    .unwrap_err();
    assert_eq!(e.key, "plant.database_url");
    assert!(e.reason.contains("sslmode=disable"), "{e}");
}

#[test]
fn the_ui_is_served_over_https_only_with_both_files() {
    let ui = |extra: &str| {
        reference().replace(
            "session_idle_minutes = 30\n",
            &format!("session_idle_minutes = 30\n{extra}"),
        )
    };
    let c = parse(&ui(
        "tls_cert_file = \"tls/ui.crt\"\ntls_key_file = \"/secure/ui.key\"\n",
    ))
    .unwrap();
    assert_eq!(
        c.ui_tls,
        Some(TlsFiles {
            cert_file: "/etc/station/tls/ui.crt".into(),
            key_file: "/secure/ui.key".into(),
        }),
        "relative to the configuration file's folder"
    );
    let view = c.public_view();
    assert_eq!(view["ui"]["https"], true);
    assert!(parse(&reference()).unwrap().ui_tls.is_none());

    for (extra, key, words) in [
        (
            "tls_cert_file = \"ui.crt\"\n",
            "ui.tls_key_file",
            "set tls_key_file",
        ),
        (
            "tls_key_file = \"ui.key\"\n",
            "ui.tls_cert_file",
            "set tls_cert_file",
        ),
        (
            "tls_cert_file = \"\"\ntls_key_file = \"ui.key\"\n",
            "ui.tls_cert_file",
            "must name files",
        ),
    ] {
        let e = parse(&ui(extra)).unwrap_err();
        assert_eq!(e.key, key, "{e}");
        assert!(e.to_string().contains(words), "{e}");
    }
}

/// A configuration with `[dps]` lines, in `dir`, parsed with `env`.
fn dps_in(dir: &Path, lines: &str, env: &Environment) -> Result<Config, ConfigError> {
    Config::parse_in(
        &(base() + &format!("\n[dps]\n{lines}\n")),
        &dir.join("station.toml"),
        env,
    )
}

fn self_signed_pem(name: &str) -> String {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    rcgen::CertificateParams::new(vec![name.to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap()
        .pem()
}

#[test]
fn the_dps_ca_file_adds_certificates_and_its_mistakes_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let env = Environment::default();
    std::fs::write(
        dir.path().join("proxy-ca.pem"),
        self_signed_pem("a") + &self_signed_pem("b"),
    )
    .unwrap();
    let c = dps_in(dir.path(), "ca_file = \"proxy-ca.pem\"", &env).unwrap();
    assert_eq!(c.dps.net.ca_certificates.len(), 2);
    assert_eq!(c.dps.net.ca_file, Some(dir.path().join("proxy-ca.pem")));
    let view = c.public_view();
    assert_eq!(view["dps"]["ca_certificates"], 2);
    assert!(
        view["dps"]["ca_file"]
            .as_str()
            .unwrap()
            .ends_with("proxy-ca.pem")
    );
    assert!(
        dps_in(dir.path(), "", &env)
            .unwrap()
            .dps
            .net
            .ca_certificates
            .is_empty()
    );

    std::fs::write(dir.path().join("empty.pem"), "not a certificate\n").unwrap();
    std::fs::write(
        dir.path().join("broken.pem"),
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    for (file, words) in [
        ("missing.pem", "cannot read"),
        ("empty.pem", "holds no certificate"),
        ("broken.pem", "certificate 1 in"),
    ] {
        let e = dps_in(dir.path(), &format!("ca_file = \"{file}\""), &env).unwrap_err();
        assert_eq!(e.key, "dps.ca_file", "{e}");
        assert!(e.reason.contains(words) && e.reason.contains(file), "{e}");
    }
}

#[test]
fn the_dps_proxy_is_http_host_port_and_wins_over_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let none = Environment::default();
    let c = dps_in(dir.path(), "proxy = \"http://proxy.corp:3128\"", &none).unwrap();
    let p = c.dps.net.proxy.clone().unwrap();
    assert_eq!(p.shown(), "http://proxy.corp:3128");
    assert_eq!(c.dps.net.proxy_from, Some("dps.proxy"));
    assert_eq!(c.public_view()["dps"]["proxy"], "http://proxy.corp:3128");
    assert!(
        dps_in(dir.path(), "", &none)
            .unwrap()
            .dps
            .net
            .proxy
            .is_none()
    );

    // Credentials are used, never shown.
    let c = dps_in(
        dir.path(),
        "proxy = \"http://line7:hunter2@proxy.corp:3128\"",
        &none,
    )
    .unwrap();
    let view = c.public_view().to_string();
    assert!(
        !view.contains("hunter2") && !view.contains("line7"),
        "{view}"
    );
    assert_eq!(c.public_view()["dps"]["proxy_credentials"], true);
    assert!(!format!("{:?}", c.dps).contains("hunter2"));

    let env = Environment {
        https_proxy: Some(("HTTPS_PROXY", "envproxy:8080".into())),
        no_proxy: Some("localhost,127.0.0.1".into()),
        ..Environment::default()
    };
    let c = dps_in(dir.path(), "", &env).unwrap();
    assert_eq!(
        c.dps.net.proxy.clone().unwrap().shown(),
        "http://envproxy:8080"
    );
    assert_eq!(c.dps.net.proxy_from, Some("HTTPS_PROXY"));
    assert_eq!(c.dps.net.no_proxy.as_deref(), Some("localhost,127.0.0.1"));
    assert_eq!(c.public_view()["dps"]["no_proxy"], "localhost,127.0.0.1");
    let c = dps_in(dir.path(), "proxy = \"http://proxy.corp:3128\"", &env).unwrap();
    assert_eq!(c.dps.net.proxy.unwrap().shown(), "http://proxy.corp:3128");

    for (value, words) in [
        ("proxy.corp:3128", "not a URL"),
        ("https://proxy.corp:3128", "plain http"),
        ("socks5://proxy.corp:1080", "plain http"),
        ("http://proxy.corp", "not http://host:port"),
        ("http://proxy.corp:3128/path", "not http://host:port"),
        ("http://proxy.corp:70000", "not http://host:port"),
        ("http://:hunter2@proxy.corp:3128", "user name is empty"),
    ] {
        let e = dps_in(dir.path(), &format!("proxy = \"{value}\""), &none).unwrap_err();
        assert_eq!(e.key, "dps.proxy", "{value}: {e}");
        assert!(e.reason.contains(words), "{value}: {e}");
        assert!(!e.reason.contains("hunter2"), "{e}");
    }
    let bad_env = Environment {
        https_proxy: Some(("https_proxy", "ftp://x:21".into())),
        ..Environment::default()
    };
    let e = dps_in(dir.path(), "", &bad_env).unwrap_err();
    assert_eq!(e.key, "https_proxy", "{e}");
}

#[test]
fn sound_alerts_are_off_unless_asked_for() {
    assert!(!parse(&reference()).unwrap().sound_alerts);
    let on = reference().replace("sound_alerts = false", "sound_alerts = true");
    assert!(parse(&on).unwrap().sound_alerts);
}

#[test]
fn the_dps_probe_interval_defaults_to_15_s_and_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let env = Environment::default();
    assert_eq!(
        dps_in(dir.path(), "", &env).unwrap().dps.probe,
        Duration::from_secs(15)
    );
    assert_eq!(
        dps_in(dir.path(), "probe_ms = 2000", &env)
            .unwrap()
            .dps
            .probe,
        Duration::from_secs(2)
    );
    for bad in ["probe_ms = 50", "probe_ms = 600001"] {
        let e = dps_in(dir.path(), bad, &env).unwrap_err();
        assert_eq!(e.key, "dps.probe_ms", "{e}");
        assert!(e.reason.contains("between 100 and 600000"), "{e}");
    }
}
