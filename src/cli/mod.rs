//! The `cryptvol` command line. Two steps, as ripgrep: clap structs that only check
//! syntax ([`Cli`]), then a resolved [`Config`] (data dir, region, passphrase source)
//! that the commands use to open services. Every error becomes one line on stderr and
//! one exit code from [`exit::Exit`].

mod archive_cmd;
pub mod args;
mod attach_cmd;
mod audit_cmd;
pub mod exit;
mod grant_cmd;
mod iam_cmd;
mod init_cmd;
mod inspect_cmd;
mod kms_cmd;
mod kms_ops;
pub mod output;
mod pool_cmd;
mod regions;
mod root_key_cmd;
mod secrets_cmd;
mod snapshot_cmd;
mod sts_cmd;
mod volume_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use self::args::PassphraseSource;
use self::exit::{CliError, Exit};
use self::output::OutputFormat;
use crate::aws::credentials;
use crate::aws::{AwsError, Region};
use crate::datadir;
use crate::iam::Caller;
use crate::iam::IdentityStore;
use crate::kms::remote::RemoteKms;
use crate::kms::{EmbeddedKms, Session};
use crate::kms::{KeyBackend, blob};
use crate::sys::clock::Clock;
use crate::volume::{KeySource, VolumeHeader};

/// Key management and encrypted volumes for one machine: AWS KMS and EBS encryption, locally.
#[derive(Debug, Parser)]
#[command(name = "cryptvol", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Args)]
pub struct GlobalArgs {
    /// Data directory [default: /var/lib/cryptvol for root, else $XDG_DATA_HOME/cryptvol]
    #[arg(long, global = true, env = datadir::DATA_DIR_ENV, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Region to work in; each region has its own keys and storage
    #[arg(long, global = true, env = datadir::REGION_ENV, default_value = datadir::DEFAULT_REGION)]
    pub region: String,

    /// Output format [default: json]
    #[arg(long, global = true, value_enum)]
    pub output: Option<OutputFormat>,

    /// Print only this field of the result (`KeyMetadata.Arn`, `Keys[].KeyId`)
    #[arg(long, global = true, value_name = "PATH")]
    pub query: Option<String>,

    /// Act as this identity: a user name, `role/NAME`, or `root` [default: the account root]
    #[arg(long, global = true, env = "CRYPTVOL_PROFILE", value_name = "NAME")]
    pub profile: Option<String>,

    /// A remote KMS for volume and snapshot keys (AWS KMS protocol; credentials from the
    /// AWS credential chain, see --aws-profile). A volume records it: attach finds it
    /// again; given there, it overrides the recorded one [default: this data dir's KMS]
    #[arg(long, global = true, env = crate::kms::remote::ENDPOINT_ENV, value_name = "URL")]
    pub kms_endpoint: Option<String>,

    /// AWS profile of the remote KMS's credentials, from ~/.aws/credentials or
    /// ~/.aws/config (keys or credential_process); named here, it outranks the
    /// AWS_ACCESS_KEY_ID variables [env: AWS_PROFILE] [default: default]
    #[arg(long, global = true, value_name = "NAME")]
    pub aws_profile: Option<String>,

    /// Trust only the CA certificates of this PEM file for an https --kms-endpoint
    /// (as the AWS CLI's --ca-bundle) [default: the bundled Mozilla roots]
    #[arg(long, global = true, env = "AWS_CA_BUNDLE", value_name = "FILE")]
    pub kms_ca_bundle: Option<PathBuf>,

    /// File holding the region's passphrase (regions made with `init --passphrase-file`)
    #[arg(
        long,
        global = true,
        env = "CRYPTVOL_PASSPHRASE_FILE",
        value_name = "FILE"
    )]
    pub passphrase_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the data directory and a region (harmless to re-run)
    Init(init_cmd::InitArgs),
    /// Key management: customer master keys, data keys, rotation, aliases
    #[command(subcommand)]
    Kms(kms_cmd::KmsCommand),
    /// Secrets Manager: secrets encrypted under the region's KMS keys, their versions,
    /// resource policies and rotation
    #[command(subcommand)]
    Secretsmanager(secrets_cmd::SecretsCommand),
    /// Identities: users, roles and their policies (`--profile` acts as one)
    #[command(subcommand)]
    Iam(iam_cmd::IamCommand),
    /// Temporary credentials (AWS STS): get-session-token, assume-role, get-caller-identity
    #[command(subcommand)]
    Sts(sts_cmd::StsCommand),
    /// The audit trail of every KMS call: verify, lookup, seal
    #[command(subcommand)]
    Audit(audit_cmd::AuditCommand),
    /// Encrypted volumes: create, list, describe, resize, delete
    #[command(subcommand)]
    Volume(volume_cmd::VolumeCommand),
    /// Snapshots: instant, incremental, encrypted; restore with `volume create --from-snapshot`
    #[command(subcommand)]
    Snapshot(snapshot_cmd::SnapshotCommand),
    /// The region's settings: its snapshot store
    #[command(subcommand)]
    Region(archive_cmd::RegionCommand),
    /// The region's thin pool: check its metadata, repair it
    #[command(subcommand)]
    Pool(pool_cmd::PoolCommand),
    /// Expose a volume as the file DIR/volume (FUSE)
    Attach(attach_cmd::AttachArgs),
    /// Undo `attach`: flush and unmount DIR
    Detach {
        /// The directory given to attach
        dir: std::path::PathBuf,
    },
    /// Mount a volume's filesystem on DIR (loop device; mkfs on first use). Needs root
    Mount(attach_cmd::MountArgs),
    /// Undo `mount`: unmount, free the loop device, detach
    Unmount { dir: std::path::PathBuf },
    /// List attached and mounted volumes
    Status,
    /// The region daemon (started by attach; not for direct use)
    #[command(hide = true)]
    Daemon,
    /// Show the structure of cryptvol files without secrets
    #[command(subcommand)]
    Inspect(inspect_cmd::InspectCommand),
}

/// What every command needs, resolved from the flags and the environment.
pub struct Config {
    pub data_dir: PathBuf,
    pub region: Region,
    pub output: OutputFormat,
    /// `--output` was given (not the default).
    pub output_explicit: bool,
    pub query: Option<String>,
    pub passphrase: PassphraseSource,
    pub clock: Clock,
    /// `--profile`: who the CLI acts as.
    pub profile: Option<String>,
    /// `--kms-endpoint`: the remote KMS of volume keys, if any.
    pub kms_endpoint: Option<String>,
    /// `--aws-profile`: the AWS profile of the remote KMS's credentials.
    pub aws_profile: Option<String>,
    /// `--kms-ca-bundle`: the only CAs trusted for an https remote KMS.
    pub kms_ca_bundle: Option<PathBuf>,
}

impl Config {
    fn resolve(g: &GlobalArgs) -> Result<Config, CliError> {
        let region = Region::parse(&g.region)?;
        Ok(Config {
            data_dir: g.data_dir.clone().unwrap_or_else(datadir::default_data_dir),
            passphrase: PassphraseSource {
                file: g.passphrase_file.clone(),
                region: region.to_string(),
            },
            region,
            output: g.output.unwrap_or(OutputFormat::Json),
            output_explicit: g.output.is_some(),
            query: g.query.clone(),
            clock: Clock::from_env(),
            profile: g.profile.clone(),
            kms_endpoint: g.kms_endpoint.clone().filter(|e| !e.is_empty()),
            aws_profile: g.aws_profile.clone().filter(|p| !p.is_empty()),
            kms_ca_bundle: g
                .kms_ca_bundle
                .clone()
                .filter(|p| !p.as_os_str().is_empty()),
        })
    }

    /// The same settings for another region (cross-region copy).
    pub fn for_region(&self, r: &Region) -> Config {
        Config {
            data_dir: self.data_dir.clone(),
            region: r.clone(),
            output: self.output,
            output_explicit: self.output_explicit,
            query: self.query.clone(),
            passphrase: PassphraseSource {
                file: self.passphrase.file.clone(),
                region: r.to_string(),
            },
            clock: self.clock,
            profile: self.profile.clone(),
            kms_endpoint: self.kms_endpoint.clone(),
            aws_profile: self.aws_profile.clone(),
            kms_ca_bundle: self.kms_ca_bundle.clone(),
        }
    }

    /// A progress bar is shown on a terminal unless `--output json` asked for the result only.
    pub fn show_progress(&self) -> bool {
        use std::io::IsTerminal;
        std::io::stderr().is_terminal()
            && !(self.output_explicit && self.output == OutputFormat::Json)
    }

    pub fn region_dir(&self) -> datadir::RegionDir {
        datadir::RegionDir::new(&self.data_dir, &self.region)
    }

    /// Opens this region's KMS.
    pub fn kms(&self) -> Result<EmbeddedKms, CliError> {
        let mut ask = || self.passphrase.get();
        Ok(EmbeddedKms::open_region(
            &self.data_dir,
            &self.region,
            &mut ask,
            self.clock,
        )?)
    }

    /// The caller this command acts as (`--profile`), in this KMS's account.
    pub fn caller(&self, kms: &EmbeddedKms) -> Result<Caller, CliError> {
        let store = IdentityStore::new(&self.data_dir, kms.account().clone());
        Ok(Caller::local(
            store.resolve_profile(self.profile.as_deref())?,
        ))
    }

    /// This region's KMS as the volume layer uses it: the caller, through the volume
    /// service (`kms:ViaService = ec2.<region>.amazonaws.com`).
    /// With `--kms-endpoint`, the remote KMS instead (one signed request per call).
    pub fn volume_kms(&self) -> Result<Box<dyn KeyBackend>, CliError> {
        if let Some(endpoint) = &self.kms_endpoint {
            return Ok(Box::new(self.remote_kms(endpoint)?));
        }
        let kms = self.kms()?;
        let caller = self.caller(&kms)?;
        Ok(Box::new(Session::for_volumes(kms, &caller)))
    }

    /// The KMS of an existing volume's key: `--kms-endpoint` when given (a KMS that
    /// moved), else the endpoint the volume header records, else this data dir's KMS.
    /// Decrypt is signed for the region of the header's key ARN. A blob that no cryptvol
    /// KMS made, with no endpoint to send it to, is refused before any call.
    pub fn volume_kms_for(&self, h: &VolumeHeader) -> Result<Box<dyn KeyBackend>, CliError> {
        let KeySource::Kms {
            key_arn,
            wrapped,
            endpoint,
            ..
        } = &h.key
        else {
            return self.volume_kms();
        };
        match self.kms_endpoint.as_deref().or(endpoint.as_deref()) {
            Some(e) => Ok(Box::new(self.remote_kms(e)?.with_blob_key(key_arn))),
            None if blob::is_foreign(wrapped) => Err(AwsError::ForeignCiphertext {
                what: format!("volume {} (key {key_arn})", h.id),
            }
            .into()),
            None => self.volume_kms(),
        }
    }

    /// The remote KMS at `--kms-endpoint` (required), signing for this config's region
    /// whatever the profile's: the KMS of another machine's region, in a copy pushed there.
    pub fn volume_kms_signed_for_region(&self) -> Result<RemoteKms, CliError> {
        let endpoint = self
            .kms_endpoint
            .as_deref()
            .ok_or_else(|| CliError::bad("--kms-endpoint", "a remote KMS needs an endpoint"))?;
        let found = credentials::resolve_with_region(self.aws_profile.as_deref())?;
        Ok(RemoteKms::new(
            endpoint,
            self.region.clone(),
            found.credentials,
            self.kms_ca_bundle.as_deref(),
        )?)
    }

    /// A client of the remote KMS at `endpoint`: credentials from the AWS chain
    /// (`--aws-profile`), signing for the profile's region, else `--region`.
    fn remote_kms(&self, endpoint: &str) -> Result<RemoteKms, CliError> {
        let found = credentials::resolve_with_region(self.aws_profile.as_deref())?;
        let region = match found.region.as_deref() {
            Some(r) => Region::parse(r).map_err(|_| {
                CliError::bad(
                    "region",
                    format!(
                        "'{r}' (of AWS profile '{}', or AWS_REGION) is not a region name",
                        found.profile
                    ),
                )
            })?,
            None => self.region.clone(),
        };
        Ok(RemoteKms::new(
            endpoint,
            region,
            found.credentials,
            self.kms_ca_bundle.as_deref(),
        )?)
    }

    pub fn print<T: serde::Serialize>(&self, result: &T, title: &str) -> Result<(), CliError> {
        output::print(result, self.output, self.query.as_deref(), title)
    }
}

fn run(cli: Cli, hardening: Result<(), String>) -> Result<(), CliError> {
    let cfg = Config::resolve(&cli.global)?;
    match cli.command {
        Command::Init(args) => init_cmd::run(&cfg, args),
        Command::Region(cmd) => archive_cmd::run_region(&cfg, cmd),
        Command::Kms(cmd) => kms_cmd::run(&cfg, cmd),
        Command::Secretsmanager(cmd) => secrets_cmd::run(&cfg, cmd),
        Command::Iam(cmd) => iam_cmd::run(&cfg, cmd),
        Command::Sts(cmd) => sts_cmd::run(&cfg, cmd),
        Command::Audit(cmd) => audit_cmd::run(&cfg, cmd),
        Command::Inspect(cmd) => inspect_cmd::run(&cfg, cmd),
        Command::Volume(cmd) => volume_cmd::run(&cfg, cmd),
        Command::Snapshot(cmd) => snapshot_cmd::run(&cfg, cmd),
        Command::Pool(cmd) => pool_cmd::run(&cfg, cmd),
        Command::Attach(a) => attach_cmd::attach(&cfg, a),
        Command::Detach { dir } => attach_cmd::detach(&cfg, &dir),
        Command::Mount(m) => attach_cmd::mount(&cfg, m),
        Command::Unmount { dir } => attach_cmd::unmount(&cfg, &dir),
        Command::Status => attach_cmd::status(&cfg),
        Command::Daemon => attach_cmd::daemon(&cfg, hardening),
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    // Before any key is read: no core dumps, and (as root) no key page swapped out.
    // Best effort; only the daemon logs what could not be done.
    let hardening = crate::crypto::hardening::protect_process();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                Exit::Usage
            } else {
                Exit::Ok
            }
            .into();
        }
    };
    match run(cli, hardening) {
        Ok(()) => Exit::Ok.into(),
        Err(e) => {
            match e.code_name() {
                Some(code) => eprintln!("cryptvol: {code}: {e}"),
                None => eprintln!("cryptvol: {e}"),
            }
            e.exit().into()
        }
    }
}
