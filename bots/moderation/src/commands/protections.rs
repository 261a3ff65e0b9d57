//! `protections list|enable|disable|set`, once read (see `parse.rs`).

use serde_json::Value;
use trestle::{Appservice, Result};

use crate::{
    bot::{Moderation, resolve_room},
    db::ALL_ROOMS,
    protections::{self, PROTECTIONS, is_protection, set_key},
};

impl Moderation {
    /// The room a `protections` command names, resolved: it must be protected. `Err` is the
    /// answer when it is not.
    async fn protections_scope(
        &self,
        app: &Appservice,
        room: Option<&str>,
    ) -> Result<std::result::Result<Option<String>, String>> {
        let Some(room) = room else {
            return Ok(Ok(None));
        };
        let room = resolve_room(app, room).await?.to_string();
        if !self.model().is_protected(&room) {
            return Ok(Err(format!(
                "{room} is not protected; add it with rooms add first."
            )));
        }
        Ok(Ok(Some(room)))
    }

    /// `protections list [room]`.
    pub(super) async fn protections_list(
        &self,
        app: &Appservice,
        room: Option<&str>,
    ) -> Result<String> {
        let room = match self.protections_scope(app, room).await? {
            Ok(room) => room,
            Err(answer) => return Ok(answer),
        };
        let room = room.as_deref();
        let model = self.model();
        let scope = room.unwrap_or(ALL_ROOMS);
        let mut out = format!(
            "Protections {}:\n",
            room.map(|r| format!("in {r}"))
                .unwrap_or_else(|| "for every protected room".into())
        );
        for (name, about) in PROTECTIONS {
            let [all, own] = model.layers(scope, name);
            let layers: Vec<&serde_json::Map<String, Value>> = if room.is_some() {
                vec![&all, &own]
            } else {
                vec![&all]
            };
            let settings = effective_json(name, &layers);
            let enabled = settings
                .get("enabled")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            out.push_str(&format!(
                "{} {name}: {} — {about}\n",
                if enabled { "●" } else { "○" },
                Value::Object(settings)
            ));
        }
        Ok(out)
    }

    /// `protections enable|disable|set <name> … [room]`.
    pub(super) async fn protection_set(
        &self,
        app: &Appservice,
        room: Option<&str>,
        name: &str,
        key: &str,
        value: Value,
    ) -> Result<String> {
        let room = match self.protections_scope(app, room).await? {
            Ok(room) => room,
            Err(answer) => return Ok(answer),
        };
        let scope = room.as_deref().unwrap_or(ALL_ROOMS);
        if !is_protection(name) {
            let names: Vec<&str> = PROTECTIONS.iter().map(|(n, _)| *n).collect();
            return Ok(format!(
                "No protection named {name}; there are: {}.",
                names.join(", ")
            ));
        }
        let (base, mut settings) = {
            let model = self.model();
            let base = if scope == ALL_ROOMS {
                Vec::new()
            } else {
                vec![model.protection_layer(ALL_ROOMS, name)]
            };
            (base, model.protection_layer(scope, name))
        };
        let base_refs: Vec<&serde_json::Map<String, Value>> = base.iter().collect();
        if let Err(error) = set_key(name, &base_refs, &mut settings, key, value) {
            return Ok(format!("Not changed: {name} {key}: {error}"));
        }
        self.db(app)
            .await?
            .put_protection(scope, name, &settings)
            .await?;
        {
            let mut model = self.model();
            model
                .protections
                .retain(|(r, n, _)| !(r == scope && n == name));
            model
                .protections
                .push((scope.to_owned(), name.to_owned(), settings.clone()));
        }
        let where_ = if scope == ALL_ROOMS {
            "every protected room".to_owned()
        } else {
            scope.to_owned()
        };
        Ok(format!(
            "{name} in {where_}: {}",
            Value::Object(settings.clone())
        ))
    }
}

/// The protection's settings as JSON, defaults filled in.
fn effective_json(
    name: &str,
    layers: &[&serde_json::Map<String, Value>],
) -> serde_json::Map<String, Value> {
    fn to_map<T: serde::Serialize + serde::de::DeserializeOwned + Default>(
        layers: &[&serde_json::Map<String, Value>],
    ) -> serde_json::Map<String, Value> {
        let value: T = protections::effective(layers).unwrap_or_default();
        match serde_json::to_value(value) {
            Ok(Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        }
    }
    match name {
        protections::WordFilter::NAME => to_map::<protections::WordFilter>(layers),
        protections::Flood::NAME => to_map::<protections::Flood>(layers),
        protections::MentionSpam::NAME => to_map::<protections::MentionSpam>(layers),
        protections::JoinFlood::NAME => to_map::<protections::JoinFlood>(layers),
        _ => to_map::<protections::LinkSpam>(layers),
    }
}
