//! An offline factory root for tests, kept with openssl as a factory would:
//! a P-256 root key and certificate, and `sign` for a station's
//! intermediate request. `sign_with` uses rcgen instead, for certificates
//! openssl 3.0 cannot make (already expired, no path length).

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Root {
    pub cert: PathBuf,
    pub key: PathBuf,
    dir: PathBuf,
}

pub fn openssl(args: &[&str]) -> std::process::Output {
    Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is installed")
}

fn ok(out: std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Root {
    /// A new root in `dir` (root.key, PKCS#8; root.pem).
    pub fn new(dir: &Path) -> Root {
        let (cert, key) = (dir.join("root.pem"), dir.join("root.key"));
        ok(
            openssl(&[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                key.to_str().unwrap(),
            ]),
            "root key",
        );
        ok(
            openssl(&[
                "req",
                "-x509",
                "-new",
                "-key",
                key.to_str().unwrap(),
                "-subj",
                "/O=Example Factory/CN=Example Factory Root CA",
                "-days",
                "3650",
                "-sha256",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-out",
                cert.to_str().unwrap(),
            ]),
            "root certificate",
        );
        Root {
            cert,
            key,
            dir: dir.to_path_buf(),
        }
    }

    /// Signs a station's intermediate request as the factory does: CA
    /// with path length 0, keyCertSign and cRLSign, `days` long. Returns
    /// the certificate's path.
    pub fn sign(&self, csr: &Path, days: u32, name: &str) -> PathBuf {
        self.sign_req(
            csr,
            days,
            name,
            "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\n",
            &[],
            "signing the intermediate",
        )
    }

    /// Signs a TLS server request as a plant's CA does: the names it asks
    /// for (copied from the request), serverAuth, `days` long. Returns the
    /// certificate's path.
    pub fn sign_server(&self, csr: &Path, days: u32, name: &str) -> PathBuf {
        self.sign_req(
            csr,
            days,
            name,
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nauthorityKeyIdentifier=keyid:always\n",
            &["-copy_extensions", "copy"],
            "signing the server certificate",
        )
    }

    /// `openssl x509 -req` with the root, the extensions `ext` and
    /// `extra` arguments; the certificate's path.
    fn sign_req(
        &self,
        csr: &Path,
        days: u32,
        name: &str,
        ext_text: &str,
        extra: &[&str],
        what: &str,
    ) -> PathBuf {
        let ext = self.dir.join(format!("{name}.ext"));
        std::fs::write(&ext, ext_text).unwrap();
        let out = self.dir.join(format!("{name}.pem"));
        let serial = format!("0x{}", hex::encode(station::random::bytes::<16>()));
        let days = days.to_string();
        let mut args = vec![
            "x509",
            "-req",
            "-in",
            csr.to_str().unwrap(),
            "-CA",
            self.cert.to_str().unwrap(),
            "-CAkey",
            self.key.to_str().unwrap(),
            "-set_serial",
            &serial,
            "-days",
            &days,
            "-sha256",
        ];
        args.extend_from_slice(extra);
        args.extend([
            "-extfile",
            ext.to_str().unwrap(),
            "-out",
            out.to_str().unwrap(),
        ]);
        ok(openssl(&args), what);
        out
    }

    /// Signs a request with rcgen and the root key, letting `edit` change
    /// the certificate's parameters first.
    pub fn sign_with(
        &self,
        csr: &Path,
        name: &str,
        edit: impl FnOnce(&mut rcgen::CertificateParams),
    ) -> PathBuf {
        let key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(&self.key).unwrap()).unwrap();
        let issuer =
            rcgen::Issuer::from_ca_cert_pem(&std::fs::read_to_string(&self.cert).unwrap(), key)
                .unwrap();
        let mut req = rcgen::CertificateSigningRequestParams::from_pem(
            &std::fs::read_to_string(csr).unwrap(),
        )
        .unwrap();
        req.params.use_authority_key_identifier_extension = true;
        req.params.serial_number = Some(rcgen::SerialNumber::from_slice(
            &station::random::bytes::<16>(),
        ));
        edit(&mut req.params);
        let cert = req.signed_by(&issuer).unwrap();
        let out = self.dir.join(format!("{name}.pem"));
        std::fs::write(&out, cert.pem()).unwrap();
        out
    }

    /// `openssl verify` of `leaf` (PEM file) with this root and
    /// `intermediate`; the output, and whether it succeeded.
    pub fn verify(&self, intermediate: &Path, leaf: &Path, crl: Option<&Path>) -> (bool, String) {
        let mut args = vec![
            "verify".to_string(),
            "-CAfile".into(),
            self.cert.display().to_string(),
            "-untrusted".into(),
            intermediate.display().to_string(),
        ];
        if let Some(crl) = crl {
            args.extend([
                "-crl_check".into(),
                "-CRLfile".into(),
                crl.display().to_string(),
            ]);
        }
        args.push(leaf.display().to_string());
        let out = Command::new("openssl").args(&args).output().unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }
}

/// Runs the station binary with `args` and extra environment variables.
pub fn station(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut c = Command::new(super::station_bin());
    c.args(args)
        .env_remove("STATION_CA_PASSPHRASE")
        .env_remove("STATION_CA_PIN");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// Output text of a finished command, stdout then stderr.
pub fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
