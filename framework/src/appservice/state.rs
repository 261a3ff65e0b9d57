use ruma::{
    RoomId,
    api::{AppserviceUserIdentity, client::state::get_state_event_for_key, error::ErrorKind},
    events::StateEventType,
};
use serde::de::DeserializeOwned;

use crate::{Appservice, Result};

impl Appservice {
    /// The content of a room's current state event of `event_type` and `state_key`, read as the
    /// bot: `None` when the room has no such event. Read as `serde_json::Value` to change it and
    /// send it back whole, so that fields this code does not know survive.
    /// Spec: <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3roomsroomidstateeventtypestatekey>
    pub async fn state_content<T: DeserializeOwned>(
        &self,
        room_id: &RoomId,
        event_type: StateEventType,
        state_key: &str,
    ) -> Result<Option<T>> {
        let request = get_state_event_for_key::v3::Request::new(
            room_id.to_owned(),
            event_type,
            state_key.to_owned(),
        );
        match self
            .client()
            .send(request, AppserviceUserIdentity::default())
            .await
        {
            Ok(response) => Ok(Some(serde_json::from_str(response.event_or_content.get())?)),
            Err(e) if matches!(e.kind(), Some(ErrorKind::NotFound)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use ruma::room_id;
    use serde_json::{Value, json};

    use super::*;
    use crate::testing::MockHomeserver;

    #[tokio::test]
    async fn a_state_event_is_read_and_a_missing_one_is_none() {
        let levels = json!({"users": {"@bot:x": 100}, "custom": true});
        let hs = MockHomeserver::start(json!({}), levels.clone()).await;
        let registration =
            trestle_registration::Registration::generate("t", None, "bot", "t_", "x");
        let app = Appservice::builder(registration, hs.url.clone(), "x")
            .build()
            .await
            .unwrap();
        let room = room_id!("!r:x");
        let read: Option<Value> = app
            .state_content(room, StateEventType::RoomPowerLevels, "")
            .await
            .unwrap();
        assert_eq!(read, Some(levels), "unknown fields are kept");
        let missing: Option<Value> = app
            .state_content(room, StateEventType::RoomServerAcl, "")
            .await
            .unwrap();
        assert_eq!(missing, None);
        // Any other refusal is an error, not "no such event".
        assert!(
            app.state_content::<Value>(room, StateEventType::RoomTopic, "")
                .await
                .is_err()
        );
    }
}
