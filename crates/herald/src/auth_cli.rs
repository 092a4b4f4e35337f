//! `herald auth ...`: edits the auth file offline (users, passwords, API tokens, ACLs).
//! The server reads the file at start (`herald serve --auth-file`); restart it to apply.
//!
//! Invariants: passwords are read from stdin or an environment variable, never from a
//! flag (flags show up in `ps`); a token is printed once, at creation, and only its
//! digest is stored; every change rewrites the file atomically.

use std::io::BufRead as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use herald_auth::acl::parse_operations;
use herald_auth::credential::DEFAULT_ITERATIONS;
use herald_auth::{AclEntry, AuthFile, ResourceKind};

#[derive(Args, Debug)]
pub struct AuthArgs {
    /// The auth file (created if missing).
    #[arg(long, env = "HERALD_AUTH_FILE")]
    file: PathBuf,
    #[command(subcommand)]
    command: AuthCommand,
}

#[derive(Subcommand, Debug)]
pub enum AuthCommand {
    /// Add a user with a password (or change its password). The password is read from
    /// the first line of stdin, or from the environment variable named by --password-env.
    AddUser {
        name: String,
        #[arg(long)]
        password_env: Option<String>,
        /// PBKDF2 iterations of the SCRAM credential (at least 4096).
        #[arg(long, default_value_t = DEFAULT_ITERATIONS)]
        iterations: u32,
    },
    /// Remove a user, its tokens and its ACL entries.
    RemoveUser { name: String },
    /// Issue an API token for a user (created token-only if missing); printed once.
    AddToken {
        user: String,
        /// A name for the token, shown in listings (default `default`).
        #[arg(long, default_value = "default")]
        id: String,
    },
    /// Revoke a user's token by id.
    RevokeToken { user: String, id: String },
    /// Grant operations on resources matching a glob pattern.
    Grant {
        /// User name, or `*` for every authenticated principal.
        #[arg(long)]
        principal: String,
        /// topic, group, stream, subscription, cluster or `*`.
        #[arg(long)]
        resource: String,
        /// Glob over resource names (`orders.*`, `*`).
        #[arg(long)]
        pattern: String,
        /// Comma-separated: produce, consume, create, delete, admin, or all.
        #[arg(long)]
        operations: String,
    },
    /// Remove the grants of a principal on a resource pattern.
    Revoke {
        #[arg(long)]
        principal: String,
        #[arg(long)]
        resource: String,
        #[arg(long)]
        pattern: String,
    },
    /// Show users (with token ids, never secrets) and ACL entries.
    List,
}

pub fn run(args: AuthArgs, json: bool) -> anyhow::Result<()> {
    let path = &args.file;
    let mut file = AuthFile::load_or_empty(path)?;
    match args.command {
        AuthCommand::AddUser {
            name,
            password_env,
            iterations,
        } => {
            let password = match password_env {
                Some(var) => std::env::var(&var)
                    .with_context(|| format!("environment variable {var} is not set"))?,
                None => {
                    let mut line = String::new();
                    std::io::stdin()
                        .lock()
                        .read_line(&mut line)
                        .context("reading the password from stdin")?;
                    line.trim_end_matches(['\n', '\r']).to_string()
                }
            };
            file.set_password(&name, &password, iterations)?;
            file.save(path)?;
            eprintln!("user `{name}` saved in {}", path.display());
        }
        AuthCommand::RemoveUser { name } => {
            file.remove_user(&name)?;
            file.save(path)?;
            eprintln!("user `{name}` removed");
        }
        AuthCommand::AddToken { user, id } => {
            file.ensure_user(&user)?;
            let token = file.add_token(&user, &id)?;
            file.save(path)?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"user": user, "id": id, "token": token})
                );
            } else {
                println!("{token}");
                eprintln!("token `{id}` of `{user}`: shown once, store it now");
            }
        }
        AuthCommand::RevokeToken { user, id } => {
            file.revoke_token(&user, &id)?;
            file.save(path)?;
            eprintln!("token `{id}` of `{user}` revoked");
        }
        AuthCommand::Grant {
            principal,
            resource,
            pattern,
            operations,
        } => {
            let entry = AclEntry {
                principal,
                resource: resource.parse()?,
                pattern,
                operations: parse_operations(&operations)?,
            };
            file.grant(entry)?;
            file.save(path)?;
        }
        AuthCommand::Revoke {
            principal,
            resource,
            pattern,
        } => {
            let kind: ResourceKind = resource.parse()?;
            let removed = file.revoke(&principal, kind, &pattern);
            if removed == 0 {
                anyhow::bail!("no grant of `{principal}` on {kind} `{pattern}`");
            }
            file.save(path)?;
        }
        AuthCommand::List => {
            for user in &file.users {
                let tokens: Vec<&str> = user.tokens.iter().map(|t| t.id.as_str()).collect();
                let password = user.scram_sha256.is_some();
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"user": user.name, "password": password, "tokens": tokens})
                    );
                } else {
                    println!(
                        "user {:<24} password={password} tokens=[{}]",
                        user.name,
                        tokens.join(",")
                    );
                }
            }
            for acl in &file.acls {
                let ops: Vec<&str> = acl.operations.iter().map(|o| o.as_str()).collect();
                if json {
                    println!("{}", serde_json::to_string(acl)?);
                } else {
                    println!(
                        "acl  {:<24} {} {} {}",
                        acl.principal,
                        acl.resource,
                        acl.pattern,
                        ops.join(",")
                    );
                }
            }
        }
    }
    Ok(())
}
