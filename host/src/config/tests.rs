use std::path::Path;

use super::*;

const GOOD: &str = "
homeserver:
  server_name: example.org
  url: http://127.0.0.1:8008/
listen: 127.0.0.1:29400
plugins:
  echo:
    enabled: true
    settings:
      prefix: '?'
  other:
    enabled: false
";

fn parse(text: &str) -> Result<Config> {
    Config::parse(text, Path::new("conf/trestle.yaml"))
}

#[derive(Debug, Default, serde::Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
struct EchoSettings {
    prefix: String,
}

#[test]
fn reads_a_configuration_with_defaults() {
    let config = parse(GOOD).unwrap();
    assert_eq!(config.homeserver.server_name, "example.org");
    assert_eq!(config.listen.port(), 29400);
    assert_eq!(config.plugin_url("echo"), "http://127.0.0.1:29400/echo");
    assert_eq!(config.data_dir(), Path::new("conf/data"));
    assert_eq!(
        config.database_url("echo").unwrap(),
        "sqlite://conf/data/echo.db"
    );
    assert_eq!(
        config.registration_path("echo"),
        Path::new("conf/data/registrations/echo.yaml")
    );
    assert!(config.plugins["echo"].enabled && !config.plugins["other"].enabled);
    let echo: EchoSettings = config.plugins["echo"]
        .settings(&config.path, "echo")
        .unwrap();
    assert_eq!(echo.prefix, "?");
    let other: EchoSettings = config.plugins["other"]
        .settings(&config.path, "other")
        .unwrap();
    assert_eq!(other, EchoSettings::default());
    assert!(config.metrics.enabled);
    assert_eq!(config.logging.format, LogFormat::Text);
}

#[test]
fn a_typo_is_refused_with_file_line_and_field() {
    let err = parse(&GOOD.replace("  url: http", "  ulr: http"))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("conf/trestle.yaml: "), "{err}");
    assert!(err.contains("line 4"), "{err}");
    assert!(err.contains("unknown field `ulr`"), "{err}");
    assert!(err.contains("expected one of"), "{err}");

    let err = parse(&GOOD.replace("listen: 127.0.0.1:29400", "listen: nowhere"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 5"), "{err}");
}

#[test]
fn plugin_settings_errors_name_the_plugin_and_line() {
    let config = parse(&GOOD.replace("prefix: '?'", "prefx: '?'")).unwrap();
    let err = config.plugins["echo"]
        .settings::<EchoSettings>(&config.path, "echo")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("conf/trestle.yaml: line 10: field `plugins.echo.settings`"),
        "{err}"
    );
    assert!(err.contains("unknown field `prefx`"), "{err}");
}

#[test]
fn secrets_come_from_the_environment_or_a_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("db"), "postgres://from-file\n").unwrap();
    let path = dir.path().join("trestle.yaml");
    let text = |db: &str| format!("homeserver: {{server_name: x}}\ndatabase: {db}\n");
    let config = Config::parse(&text("{file: db}"), &path).unwrap();
    assert_eq!(config.database_url("echo").unwrap(), "postgres://from-file");
    // SAFETY: tests in this module do not read this variable concurrently.
    unsafe { std::env::set_var("TRESTLE_TEST_DB_URL", "postgres://from-env") };
    let config = Config::parse(&text("{env: TRESTLE_TEST_DB_URL}"), &path).unwrap();
    assert_eq!(config.database_url("echo").unwrap(), "postgres://from-env");
    let config = Config::parse(&text("{env: TRESTLE_TEST_UNSET_VAR}"), &path).unwrap();
    let err = config.database_url("echo").unwrap_err().to_string();
    assert!(
        err.contains("field `database`") && err.contains("TRESTLE_TEST_UNSET_VAR"),
        "{err}"
    );
    assert!(!format!("{:?}", config.database).contains("from-env"));
}

#[test]
fn durability_is_os_cache_unless_disk_is_asked_for() {
    assert_eq!(parse(GOOD).unwrap().durability, Durability::OsCache);
    let config = parse(&format!("{GOOD}durability: disk\n")).unwrap();
    assert_eq!(config.durability, Durability::Disk);
    let err = parse(&format!("{GOOD}durability: fsync\n"))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("conf/trestle.yaml: "), "{err}");
    assert!(err.contains("line 13"), "{err}");
    assert!(
        err.contains("unknown variant `fsync`") && err.contains("os-cache"),
        "{err}"
    );
}

#[test]
fn max_in_flight_is_the_framework_default_unless_set_and_never_zero() {
    assert_eq!(
        parse(GOOD).unwrap().max_in_flight,
        trestle::DEFAULT_MAX_IN_FLIGHT
    );
    assert_eq!(
        parse(&format!("{GOOD}max_in_flight: 250\n"))
            .unwrap()
            .max_in_flight,
        250
    );
    let err = parse(&format!("{GOOD}max_in_flight: 0\n"))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("conf/trestle.yaml: field `max_in_flight`"),
        "{err}"
    );
}

#[test]
fn bad_urls_are_refused() {
    let err = parse(&GOOD.replace("url: http://127.0.0.1:8008/", "url: 127.0.0.1:8008"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("field `homeserver.url`"), "{err}");
}

#[test]
fn the_default_configuration_parses() {
    let text = default_config(
        "example.org",
        "http://127.0.0.1:8008",
        "127.0.0.1:29300".parse().unwrap(),
        &[],
    );
    let config = parse(&text).unwrap();
    assert_eq!(
        config.homeserver.url.as_deref(),
        Some("http://127.0.0.1:8008")
    );
}

#[tokio::test]
async fn the_homeserver_is_discovered_through_well_known() {
    use axum::{Json, routing::get};
    let app = axum::Router::new().route(
        "/.well-known/matrix/client",
        get(|| async {
            Json(serde_json::json!({"m.homeserver": {"base_url": "https://matrix.example.org/"}}))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let config = parse("homeserver: {server_name: example.org}\n").unwrap();
    assert_eq!(
        config.discover(&origin).await.unwrap(),
        "https://matrix.example.org"
    );
    // Nothing there: the error says which field to set and what failed.
    let err = config
        .discover(&format!("{origin}/nothing"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("field `homeserver.url` is not set") && err.contains("404"),
        "{err}"
    );
}

#[test]
fn encryption_says_who_may_verify_the_bot() {
    let with = |encryption: &str| GOOD.replace("  other:\n", &format!("{encryption}\n  other:\n"));
    let config = parse(&with("    encryption: true")).unwrap();
    let options = config.plugins["echo"].encryption_options().unwrap();
    assert_eq!(options.verify_users, None);
    let map = "    encryption:\n      verify_users: [\"@admin-*:example.org\"]";
    let config = parse(&with(map)).unwrap();
    let options = config.plugins["echo"].encryption_options().unwrap();
    assert_eq!(options.verify_users.unwrap(), ["@admin-*:example.org"]);
    let error = parse(&with("    encryption: {verify_users: [1]}"))
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "conf/trestle.yaml: line 11: field `plugins.echo.encryption.verify_users`: expected a \
         list of user id globs, found [1]"
    );
}

#[test]
fn encryption_is_a_flag_or_a_map_per_plugin() {
    let with = |encryption: &str| GOOD.replace("  other:\n", &format!("{encryption}\n  other:\n"));
    let config = parse(&with("    encryption: true")).unwrap();
    assert!(config.plugins["echo"].encryption() && !config.plugins["other"].encryption());
    let options = config.plugins["echo"].encryption_options().unwrap();
    assert!(options.accept_unsigned_devices);

    let config = parse(&with("    encryption: {accept_unsigned_devices: false}")).unwrap();
    let options = config.plugins["echo"].encryption_options().unwrap();
    assert!(!options.accept_unsigned_devices);
    let map = "    encryption:\n      enabled: false\n      accept_unsigned_devices: false";
    let config = parse(&with(map)).unwrap();
    assert!(!config.plugins["echo"].encryption());

    let error = |encryption: &str| parse(&with(encryption)).unwrap_err().to_string();
    assert_eq!(
        error("    encryption: sometimes"),
        "conf/trestle.yaml: line 11: field `plugins.echo.encryption`: expected true, false or a \
         map (enabled, accept_unsigned_devices, verify_users, recovery_key), found \"sometimes\""
    );
    assert_eq!(
        error("    encryption: {accept_unsigned_devices: maybe}"),
        "conf/trestle.yaml: line 11: field `plugins.echo.encryption.accept_unsigned_devices`: \
         expected true or false, found \"maybe\""
    );
    assert_eq!(
        error("    encryption:\n      enabled: true\n      accept_unsigned: false"),
        "conf/trestle.yaml: line 12: field `plugins.echo.encryption.accept_unsigned`: unknown \
         field; known: enabled, accept_unsigned_devices, verify_users, recovery_key"
    );
}

#[test]
fn the_recovery_key_is_a_secret_in_the_encryption_map() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trestle.yaml");
    let with = |key: &str| {
        let encryption = format!("    encryption:\n      recovery_key: {key}\n");
        GOOD.replace("  other:\n", &format!("{encryption}  other:\n"))
    };
    let key = |config: &Config| config.plugins["echo"].recovery_key(&path, "echo");

    let config = Config::parse(&with("EsTc abcd"), &path).unwrap();
    assert!(config.plugins["echo"].encryption());
    assert_eq!(key(&config).unwrap().as_deref(), Some("EsTc abcd"));
    std::fs::write(dir.path().join("recovery.key"), "EsTfrom file\n").unwrap();
    let config = Config::parse(&with("{file: recovery.key}"), &path).unwrap();
    assert_eq!(key(&config).unwrap().as_deref(), Some("EsTfrom file"));
    let config = Config::parse(&with("{env: TRESTLE_TEST_UNSET_RECOVERY}"), &path).unwrap();
    assert_eq!(
        key(&config).unwrap_err().to_string(),
        format!(
            "{}: field `plugins.echo.encryption.recovery_key`: environment variable \
             TRESTLE_TEST_UNSET_RECOVERY is not set",
            path.display()
        )
    );
    // Not shown in debug output.
    let mut options = config.plugins["echo"].encryption_options().unwrap();
    options.recovery_key = Some("EsTc abcd".to_owned());
    assert!(!format!("{options:?}").contains("EsTc"), "{options:?}");

    let error = parse(&with("[1, 2]")).unwrap_err().to_string();
    assert_eq!(
        error,
        "conf/trestle.yaml: line 12: field `plugins.echo.encryption.recovery_key`: expected a \
         string, {env: NAME} or {file: PATH}, found [1,2]"
    );
}

#[test]
fn a_plugin_off_by_default_runs_only_where_enabled() {
    fn build(_: &PluginSettings<'_>) -> Result<trestle::Router> {
        Ok(trestle::Router::new())
    }
    let on = Plugin::new("echo", "echo", "echo_", build);
    let off = Plugin::new("bridge", "bridge", "bridge_", build).off_by_default();
    let names = |config: &Config| -> Vec<&str> {
        crate::enabled_plugins(config, &[on, off])
            .unwrap()
            .iter()
            .map(|p| p.name)
            .collect()
    };
    let without = parse(&GOOD.replace("  other:\n    enabled: false\n", "")).unwrap();
    assert_eq!(names(&without), ["echo"]);
    let enabled = parse(
        &GOOD
            .replace("  other:\n", "  bridge:\n")
            .replace("enabled: false", "enabled: true"),
    )
    .unwrap();
    assert_eq!(names(&enabled), ["echo", "bridge"]);
    let text = default_config(
        "example.org",
        "http://127.0.0.1:8008",
        "127.0.0.1:29300".parse().unwrap(),
        &[on, off],
    );
    assert!(text.contains("  echo:\n    enabled: true\n"), "{text}");
    assert!(text.contains("  bridge:\n    enabled: false\n"), "{text}");
    assert_eq!(names(&parse(&text).unwrap()), ["echo"]);
}

#[test]
fn runtime_threads_are_unset_unless_given_and_never_zero() {
    assert_eq!(parse(GOOD).unwrap().runtime.threads, None);
    assert_eq!(
        parse(&format!("{GOOD}runtime:\n  threads: 1\n"))
            .unwrap()
            .runtime
            .threads,
        Some(1)
    );
    let err = parse(&format!("{GOOD}runtime:\n  threads: 0\n"))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("conf/trestle.yaml: field `runtime.threads`: expected at least 1"),
        "{err}"
    );
}
