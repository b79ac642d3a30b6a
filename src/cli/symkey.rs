//! `station symkey init|show`: making and describing the master key for
//! symmetric-key devices (`[symmetric_key]`). Prints no key material: `show`
//! gives the backend and the key's non-secret id.

use super::ConfigArgs;
use crate::config::{Config, SymKeyBackend, SymKeyConfig};
use crate::symkey::MasterKey;

fn section(cfg: &Config) -> anyhow::Result<&SymKeyConfig> {
    cfg.symmetric_key.as_ref().ok_or_else(|| {
        anyhow::anyhow!(
            "{} has no [symmetric_key] section: add one (key = \"file\" or \"pkcs11\"; see station.toml) to give symmetric-key devices their keys",
            cfg.file.display()
        )
    })
}

/// `station symkey init`: makes the master key in its backend; never
/// replaces one.
pub fn symkey_init(args: &ConfigArgs) -> anyhow::Result<()> {
    let cfg = args.load()?;
    let sk = section(&cfg)?;
    let key = MasterKey::create(sk)?;
    println!("made the master key for symmetric-key devices");
    println!("key:    {}", key.describe());
    println!("id:     {}", key.id()?);
    match &sk.backend {
        SymKeyBackend::File if key.describe().ends_with("(encrypted)") => println!(
            "        mode 0600, encrypted with the CA passphrase; keep it secret and backed up: every device key comes from it"
        ),
        SymKeyBackend::File => println!(
            "        mode 0600, NOT encrypted: set STATION_CA_PASSPHRASE or [ca] key_passphrase_file for production"
        ),
        SymKeyBackend::Pkcs11(_) => println!(
            "        made in the token, sensitive and not extractable: it never leaves the token (back the token up as its vendor says)"
        ),
    }
    Ok(())
}

/// `station symkey show`: the backend and the key's id.
pub fn symkey_show(args: &ConfigArgs) -> anyhow::Result<()> {
    let cfg = args.load()?;
    let key = MasterKey::open(section(&cfg)?, false)?;
    println!("key:    {}", key.describe());
    println!("id:     {}", key.id()?);
    Ok(())
}
