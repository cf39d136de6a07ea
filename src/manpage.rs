//! The man page of `fleetdns`: clap's sections (name, synopsis,
//! description, options, commands) from the same definitions as `--help`,
//! and the sections an operator looks for after them: CONFIGURATION,
//! FILES, ENVIRONMENT, SIGNALS and EXIT STATUS, with installed paths.

use std::io::{self, Write};

/// The sections clap does not know, in roff.
const OPERATOR_SECTIONS: &str = r#".SH CONFIGURATION
fleetdns reads one TOML file: the one named by \fB\-\-config\fR, else the one
named by \fBFLEETDNS_CONFIG\fR, else \fI/etc/fleetdns/fleetdns.toml\fR if it
exists, else none (every option at its default). Command\-line flags override
the file. \fBserve\fR logs which file it read at start. Every option, with its
default, is documented in \fI/usr/share/doc/fleetdns/fleetdns.example.toml\fR;
an unknown key is an error. \fBfleetdns check\fR validates the file, tries the
listen addresses and the state directory, and reads the source once.
.SH FILES
.TP
\fI/etc/fleetdns/fleetdns.toml\fR
The configuration.
.TP
\fI/var/lib/fleetdns/inventory.bin\fR
The last good inventory, served after a restart while the API is down
(under systemd, in \fB$STATE_DIRECTORY\fR; \fBstate_dir\fR elsewhere). Its first
line is a JSON header.
.TP
\fI/etc/fleetdns/static.zone\fR
Records for hosts that are not instances, when \fBstatic_records\fR names it: a
zone\-file fragment of A, AAAA, CNAME, TXT, SRV and MX records, read at start and
on SIGHUP.
.TP
\fI/etc/hosts\fR
Where \fBfleetdns hosts\fR writes its managed block by default; every other
byte of the file is kept.
.TP
\fI/lib/systemd/system/fleetdns.service\fR
The hardened service; \fBsystemctl reload fleetdns\fR sends SIGHUP.
.TP
\fI/usr/share/doc/fleetdns/\fR
The README, the deployment guide, the security notes, the IAM policy and
examples (cloud\-init, cron, resolver wiring).
.SH ENVIRONMENT
.TP
\fBFLEETDNS_CONFIG\fR
The config file, when \fB\-\-config\fR is not given (empty: as if unset).
.TP
\fBRUST_LOG\fR
Log filter (e.g. \fBdebug\fR, \fBfleetdns=debug\fR); wins over \fB\-v\fR.
.TP
\fBJOURNAL_STREAM\fR
Set by systemd: when it names stderr, every log line carries its journald
priority and no time stamp.
.TP
\fBSTATE_DIRECTORY\fR
Set by systemd's \fBStateDirectory=\fR: the default state directory.
.TP
\fBAWS_REGION\fR, \fBAWS_PROFILE\fR, \fBAWS_ACCESS_KEY_ID\fR, \fBAWS_SECRET_ACCESS_KEY\fR, \fBAWS_SESSION_TOKEN\fR
Credentials and region for the EC2 source, read by the AWS SDK's default
chain, which ends with the instance role (instance metadata, IMDSv2).
.TP
\fBAWS_ENDPOINT_URL_EC2\fR, \fBAWS_ENDPOINT_URL\fR
Another endpoint for the API (\fBsource.ec2.endpoint_url\fR wins).
.TP
\fBAWS_EC2_METADATA_DISABLED\fR
\fBtrue\fR: never ask the instance metadata service.
.SH SIGNALS
.TP
\fBSIGHUP\fR
Read the config again and apply what can change at runtime (zone, TTLs,
naming, static records, the source, timing, forwarding), then refresh the inventory at once.
One log line says what was applied and what needs a restart (listen
addresses, \fBstate_dir\fR, \fBmetrics_listen\fR, \fBtcp\fR). A config that does
not parse or validate is logged as an error and changes nothing.
.TP
\fBSIGUSR1\fR
Refresh the inventory at once and apply every unit's fetch whatever it
removes: a fetch that would remove more than \fBmax_removed_fraction\fR of
a unit is otherwise held until the next one agrees.
.TP
\fBSIGTERM\fR, \fBSIGINT\fR
Stop listening, finish, exit 0.
.SH "EXIT STATUS"
.TP
\fB0\fR
Success (also when stdout is closed early, as by \fBhead\fR).
.TP
\fB1\fR
A runtime failure: the source cannot be read, a port cannot be bound,
\fBcheck\fR found a problem.
.TP
\fB2\fR
Bad configuration or usage: the message names the file or option.
.SH "SEE ALSO"
\fBdig\fR(1), \fBresolv.conf\fR(5), \fBsystemd\-resolved\fR(8), \fBhosts\fR(5)
"#;

/// Writes the whole page of `cmd` (the top-level command).
pub fn render(cmd: clap::Command, out: &mut dyn Write) -> io::Result<()> {
    let man = clap_mangen::Man::new(cmd);
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    man.render_subcommands_section(out)?;
    out.write_all(OPERATOR_SECTIONS.as_bytes())?;
    man.render_version_section(out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_page_has_the_operator_sections_and_installed_paths_only() {
        let mut page = Vec::new();
        render(crate::cli::Cli::command(), &mut page).unwrap();
        let page = String::from_utf8(page).unwrap();
        for section in [
            ".SH NAME",
            ".SH SYNOPSIS",
            ".SH OPTIONS",
            ".SH CONFIGURATION",
            ".SH FILES",
            ".SH ENVIRONMENT",
            ".SH SIGNALS",
            ".SH \"EXIT STATUS\"",
        ] {
            assert!(page.contains(section), "{section}");
        }
        assert!(page.contains("\n.TH fleetdns 1"), "{}", &page[..80]);
        // a man page is read on a host, not in the repository
        assert!(!page.contains("deploy/"), "a repository path");
    }
}
