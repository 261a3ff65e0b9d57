use super::*;

fn get(yaml: &str) -> Value {
    load(yaml).unwrap().get("k").cloned().unwrap()
}

#[test]
fn plain_scalars_take_yaml_1_1_types() {
    for (text, want) in [
        ("yes", Value::Bool(true)),
        ("Off", Value::Bool(false)),
        ("y", Value::Str("y".into())),
        ("~", Value::Null),
        ("", Value::Null),
        ("0755", Value::Int(Some(0o755))),
        ("0x1F", Value::Int(Some(31))),
        ("1_000", Value::Int(Some(1000))),
        ("1:20", Value::Int(Some(80))),
        ("0o17", Value::Str("0o17".into())),
        ("08", Value::Str("08".into())),
        ("1e5", Value::Str("1e5".into())),
        ("1.5e+5", Value::Float(150000.0)),
        ("'yes'", Value::Str("yes".into())),
        ("!!str 12", Value::Str("12".into())),
        ("! 12", Value::Int(Some(12))),
        ("! '12'", Value::Int(Some(12))),
        ("'12'", Value::Str("12".into())),
        ("!!bool TRUE", Value::Bool(true)),
    ] {
        assert_eq!(get(&format!("k: {text}\n")), want, "{text}");
    }
    assert!(matches!(
        get("k: 2024-02-29\n"),
        Value::Other {
            kind: "timestamp",
            ..
        }
    ));
}

#[test]
fn what_safe_load_refuses_is_refused() {
    for yaml in [
        "k: 2023-02-29\n",
        "k: =\n",
        "k: <<\n",
        "k: !foo x\n",
        "k: !!int abc\n",
        "k: 0x_\n",
        "a: 1\n---\nb: 2\n",
        "? [1]\n: 2\n",
        "k: [1\n",
    ] {
        assert!(load(yaml).is_err(), "{yaml:?} loaded");
    }
}

#[test]
fn merge_keys_and_duplicates_follow_pyyaml() {
    let v = load("base: &b {x: 1, y: 2}\nk: {<<: *b, y: 3, y: 4}\n").unwrap();
    let k = v.get("k").unwrap();
    assert_eq!(k.get("x"), Some(&Value::Int(Some(1))));
    assert_eq!(k.get("y"), Some(&Value::Int(Some(4))));
    let v = load("a: &a {xx: 1}\nb: &b {xx: 2}\nk: {<<: [*a, *b]}\n").unwrap();
    assert_eq!(v.get("k").unwrap().get("xx"), Some(&Value::Int(Some(2))));
    // `=` as a key is the string "=".
    assert_eq!(load("=: 1\n").unwrap().get("="), Some(&Value::Int(Some(1))));
}

#[test]
fn alias_bombs_stop() {
    let mut yaml = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let p = i - 1;
        yaml.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    assert!(load(&yaml).unwrap_err().contains("nodes"));
}
