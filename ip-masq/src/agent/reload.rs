//! Reading, validating and applying the config file. A bad file is logged
//! once and leaves the table in force as it is.

use std::time::Instant;

use tracing::{error, info, warn};

use crate::error::error_chain;
use crate::serve::state::ReloadResult;
use ip_masq_config as config;
use ip_masq_config::MasqConfig;
use ip_masq_config::table::Table;

use super::host::{Links, Maps, Rules};
use super::{Agent, flush, source, sync};

impl<K: Maps + Links, R: Rules> Agent<K, R> {
    /// Reads, validates and applies the config file. A bad file is logged
    /// once and leaves the maps as they are.
    pub(super) fn reload(&mut self) {
        let path = &self.options.config_path;
        let started = Instant::now();
        let read = match &self.options.config_dir {
            None => source::read_config_with_limit(path, self.options.max_config_bytes)
                .map(|bytes| vec![(path.display().to_string(), bytes)]),
            Some(dir) => source::read_sources(path, dir, self.options.max_config_bytes),
        };
        let bytes = match read {
            Ok(bytes) => bytes,
            Err(err) => {
                let error = error_chain(&err);
                if self.last_read_error.as_ref() == Some(&error) {
                    return;
                }
                self.last_read_error = Some(error.clone());
                self.reject(error);
                return;
            }
        };
        self.last_read_error = None;
        // Same bytes as last time: applied already, or rejected and logged
        // already. Drift in the maps is repaired separately.
        if self.last_bytes.as_ref() == Some(&bytes) {
            return;
        }
        let read_ms = elapsed_ms(started);
        let files: Vec<(String, Vec<u8>)> = bytes
            .iter()
            .filter_map(|(name, bytes)| Some((name.clone(), bytes.clone()?)))
            .collect();
        let sources: Vec<String> = files.iter().map(|(name, _)| name.clone()).collect();
        let mut entry_sources = std::collections::BTreeMap::new();
        let parsed = match files.as_slice() {
            [] => Ok(config::ParsedConfig {
                config: MasqConfig::defaults(self.options.parse),
                warnings: Vec::new(),
            }),
            [(_, bytes)] => {
                config::parse_with_limit(bytes, self.options.parse, self.options.max_config_bytes)
                    .map_err(|err| format!("{}: {err}", path.display()))
            }
            // Several files: each read on its own, then merged, with the
            // name of the file at fault in any error.
            _ => ip_masq_config::sources::parse_sources(
                &files,
                self.options.parse,
                self.options.max_config_bytes,
            )
            .map(|merged| {
                entry_sources = merged
                    .origins
                    .into_iter()
                    .map(|(cidr, files)| (cidr.to_string(), files))
                    .collect();
                config::ParsedConfig {
                    config: merged.config,
                    warnings: merged.warnings,
                }
            })
            .map_err(|err| err.to_string()),
        };
        let parsed = match parsed {
            Ok(parsed) => parsed,
            Err(err) => {
                self.last_bytes = Some(bytes);
                self.reject(err);
                return;
            }
        };
        for warning in &parsed.warnings {
            warn!(config = %path.display(), "{warning}");
        }
        let decoded_at = Instant::now();
        let decode_ms = round_ms(elapsed_ms(started) - read_ms);
        let desired = Table::effective(&parsed.config, self.options.parse.enable_ipv6);
        // What the maps decided before, to find the flows the change flips.
        let before = self.connections.as_ref().map(|_| self.applied.clone());
        let applied = sync::apply(&mut self.datapath, &mut self.applied, &desired);
        let sync_ms = elapsed_ms(decoded_at);
        match applied {
            Ok(report) => {
                for failure in &report.failures {
                    error!(error = %error_chain(failure), "map write failed; retried at next resync");
                }
                if let Some(err) = &report.unpublished {
                    error!(error = %error_chain(err), "range directory not fully published; retried at next resync");
                }
                let (v4, v6) = self.applied.family_counts();
                info!(
                    config = %path.display(),
                    source = if sources.is_empty() { "defaults (no file)".to_owned() } else { sources.join(",") },
                    added = report.added,
                    removed = report.removed,
                    failed = report.failed(),
                    chunks_written = report.published.chunks_written,
                    entries_v4 = v4,
                    entries_v6 = v6,
                    elapsed_ms = elapsed_ms(started),
                    read_ms,
                    decode_ms,
                    sync_ms,
                    "config applied"
                );
                self.shared.update(|status| {
                    status.record_reload(ReloadResult::Applied {
                        added: report.added,
                        removed: report.removed,
                        failed: report.failed(),
                        elapsed_ms: elapsed_ms(started),
                    });
                });
                self.config = Some(parsed.config);
                let identity = self.config_identity();
                self.shared.update(|status| {
                    status.config_sha256 = Some(identity);
                    status.config_sources = sources;
                    status.entry_sources = entry_sources;
                });
                if let Some(before) = before
                    && report.added + report.removed > 0
                {
                    self.flush_flipped_connections(&before);
                }
                // After a failed write the same bytes are applied again at
                // the next resync, which retries the writes.
                self.last_bytes = if report.failed() == 0 {
                    Some(bytes)
                } else {
                    None
                };
            }
            Err(err) => {
                self.last_bytes = Some(bytes);
                self.reject(format!("{}: {err}", path.display()));
            }
        }
    }

    /// The identity of the table in force with the flags that shape the
    /// decisions and the rules (not paths, which differ between nodes).
    fn config_identity(&self) -> String {
        let rules = &self.options.rules;
        let flags = [
            ("datapath", format!("{:?}", rules.datapath)),
            ("mark", format!("{:#x}", rules.mark)),
            ("masq-chain", rules.chain.clone()),
            ("random-fully", rules.random_fully.to_string()),
            (
                "to-ports",
                rules
                    .to_ports
                    .iter()
                    .map(|r| r.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            ("enable-ipv6", self.options.parse.enable_ipv6.to_string()),
        ];
        ip_masq_config::identity::config_identity(&self.applied, &flags)
    }

    /// Deletes the conntrack entries whose decision the last change
    /// flipped, so that their next packet is decided anew.
    fn flush_flipped_connections(&mut self, before: &Table) {
        if self.options.flush == crate::model::FlushScope::Off {
            return;
        }
        let Some(connections) = self.connections.as_mut() else {
            return;
        };
        let changes = ip_masq_config::preview::decision_changes(before, &self.applied);
        let entries = match connections.list() {
            Ok(entries) => entries,
            Err(err) => {
                warn!(error = %error_chain(&err), "cannot list conntrack entries to flush");
                return;
            }
        };
        let flows = flush::entries_to_flush(&entries, &changes, self.options.flush);
        let mut flushed = 0u64;
        for (protocol, flow) in &flows {
            match connections.delete(*protocol, flow) {
                Ok(()) => flushed += 1,
                Err(err) => warn!(error = %error_chain(&err), "cannot flush a conntrack entry"),
            }
        }
        if !flows.is_empty() {
            info!(flushed, scope = ?self.options.flush, "conntrack entries flushed: their flows are decided anew");
        }
        self.shared
            .update(|status| status.conntrack_flushed += flushed);
    }

    fn reject(&self, error: String) {
        if self.config.is_some() {
            error!("config rejected, previous config stays in force: {error}");
        } else if self.restored {
            error!(
                "config rejected, the table restored from the pinned maps stays in force: {error}"
            );
        } else {
            error!(
                "config rejected and no earlier table to keep: nothing is masqueraded until a valid config arrives: {error}"
            );
        }
        self.shared.update(|status| {
            status.record_reload(ReloadResult::Rejected { error });
        });
    }
}

fn elapsed_ms(since: Instant) -> f64 {
    round_ms(since.elapsed().as_secs_f64() * 1000.0)
}

/// Milliseconds to the microsecond, so that a log field reads
/// `decode_ms=0.147`, not `0.14729899999999999`.
fn round_ms(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::round_ms;

    #[test]
    fn durations_in_logs_carry_no_float_noise() {
        assert_eq!(round_ms(0.147_298_999_999_999_99).to_string(), "0.147");
        assert_eq!(round_ms(0.3 - 0.1).to_string(), "0.2");
        assert_eq!(format!("{:?}", round_ms(1.234_567_8)), "1.235");
        assert_eq!(round_ms(12.0).to_string(), "12");
    }
}
