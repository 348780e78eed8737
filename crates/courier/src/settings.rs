//! Finding and loading the config file.
//!
//! Owns where the config comes from: `--config` / `COURIER_CONFIG`, else
//! `./courier.toml`, else built-in defaults. Validation is courier-core's.

use anyhow::Context as _;
use courier_core::Config;
use std::path::Path;

const DEFAULT_FILE: &str = "courier.toml";

pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
    let config = read(path)?;
    courier_telemetry::redact::register_url_passwords(config.connection_urls());
    Ok(config)
}

fn read(path: Option<&Path>) -> anyhow::Result<Config> {
    let env = |k: &str| std::env::var(k).ok();
    let path = match path {
        Some(p) => Some(p.to_path_buf()),
        None => Some(Path::new(DEFAULT_FILE).to_path_buf()).filter(|p| p.exists()),
    };
    match path {
        Some(p) => {
            let text = std::fs::read_to_string(&p)
                .with_context(|| format!("reading config file {}", p.display()))?;
            Ok(Config::from_toml(&text, &p.display().to_string(), &env)?)
        }
        None => Ok(Config::from_toml("", "(built-in defaults)", &env)?),
    }
}
