//! Requests to the homeserver made with a user's own access token, so the page acts as the user
//! (never through a ghost that pretends to be them), and a few the bot makes for the index.

use ruma::{
    OwnedEventId, OwnedRoomId, OwnedUserId, TransactionId,
    api::{
        IncomingResponse, MatrixVersion, OutgoingRequest, SupportedVersions,
        auth_scheme::{AuthScheme, SendAccessToken},
        client::{
            account::whoami, media::create_content, membership::join_room_by_id,
            membership::leave_room, message::send_message_event, profile::set_avatar_url,
            profile::set_display_name, redact::redact_event, room::create_room,
            room::get_room_event, session::login, session::logout, state::send_state_event,
        },
        error::FromHttpResponseError,
    },
    events::{MessageLikeEventType, StateEventType},
    serde::Raw,
};
use serde_json::Value;
use trestle::{Error, Result, client::PathInput, ruma};

mod remote;
mod sso;

/// The homeserver, as seen by the people using the page.
#[derive(Clone, Debug)]
pub(crate) struct UserApi {
    http: reqwest::Client,
    base_url: String,
    versions: SupportedVersions,
}

impl UserApi {
    pub(crate) fn new(base_url: &str) -> Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(std::time::Duration::from_secs(60))
            .build()?;
        Ok(UserApi {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            versions: SupportedVersions {
                versions: [MatrixVersion::V1_11, MatrixVersion::V1_13]
                    .into_iter()
                    .collect(),
                features: Default::default(),
            },
        })
    }

    /// Sends `request` with `token` (or none, for login).
    async fn send<R>(&self, request: R, token: Option<&str>) -> Result<R::IncomingResponse>
    where
        R: OutgoingRequest,
        Error: From<FromHttpResponseError<R::EndpointError>>,
        R::PathBuilder: PathInput,
        for<'a> R::Authentication: AuthScheme<Input<'a> = SendAccessToken<'a>>,
    {
        let access = match token {
            Some(token) => SendAccessToken::IfRequired(token),
            None => SendAccessToken::None,
        };
        let request = request.try_into_http_request::<Vec<u8>>(
            &self.base_url,
            access,
            R::PathBuilder::input(&self.versions),
        )?;
        let response = self
            .http
            .execute(reqwest::Request::try_from(request)?)
            .await?;
        let mut builder = http::Response::builder().status(response.status());
        if let Some(headers) = builder.headers_mut() {
            headers.extend(
                response
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone())),
            );
        }
        let body = response.bytes().await?;
        let response = builder
            .body(body)
            .map_err(|e| Error::Other(format!("bad response from the homeserver: {e}")))?;
        Ok(R::IncomingResponse::try_from_http_response(response)?)
    }

    /// Password login; returns the user and a fresh access token.
    pub(crate) async fn login(&self, user: &str, password: &str) -> Result<(OwnedUserId, String)> {
        let identifier = ruma::api::client::uiaa::UserIdentifier::Matrix(
            ruma::api::client::uiaa::MatrixUserIdentifier::new(user.to_owned()),
        );
        let mut request = login::v3::Request::new(login::v3::LoginInfo::Password(
            login::v3::Password::new(identifier, password.to_owned()),
        ));
        request.initial_device_display_name = Some("Trestle timeline".to_owned());
        let response = self.send(request, None).await?;
        Ok((response.user_id, response.access_token))
    }

    /// Whose token this is.
    pub(crate) async fn whoami(&self, token: &str) -> Result<OwnedUserId> {
        Ok(self
            .send(whoami::v3::Request::new(), Some(token))
            .await?
            .user_id)
    }

    /// Creates a timeline room owned by the token's user: anyone may read and join it.
    pub(crate) async fn create_timeline_room(
        &self,
        token: &str,
        name: &str,
        room_version: Option<&str>,
    ) -> Result<OwnedRoomId> {
        let mut request = create_room::v3::Request::new();
        request.preset = Some(create_room::v3::RoomPreset::PublicChat);
        request.name = Some(name.to_owned());
        request.creation_content = Some(Raw::from_json(serde_json::value::to_raw_value(
            &serde_json::json!({ "type": crate::content::ROOM_TYPE }),
        )?));
        request.initial_state = vec![Raw::from_json(serde_json::value::to_raw_value(
            &serde_json::json!({
                "type": "m.room.history_visibility",
                "state_key": "",
                "content": { "history_visibility": "world_readable" },
            }),
        )?)];
        if let Some(version) = room_version {
            request.room_version = Some(version.try_into()?);
        }
        Ok(self.send(request, Some(token)).await?.room_id)
    }

    /// Sends a message-like event of any type.
    pub(crate) async fn send_event(
        &self,
        token: &str,
        room_id: &OwnedRoomId,
        event_type: &str,
        content: &Value,
    ) -> Result<OwnedEventId> {
        let request = send_message_event::v3::Request::new_raw(
            room_id.clone(),
            TransactionId::new(),
            MessageLikeEventType::from(event_type),
            Raw::from_json(serde_json::value::to_raw_value(content)?),
        );
        Ok(self.send(request, Some(token)).await?.event_id)
    }

    /// Sets a state event as the token's user.
    pub(crate) async fn send_state(
        &self,
        token: &str,
        room_id: &OwnedRoomId,
        event_type: &str,
        state_key: &str,
        content: &Value,
    ) -> Result<OwnedEventId> {
        let request = send_state_event::v3::Request::new_raw(
            room_id.clone(),
            StateEventType::from(event_type),
            state_key.to_owned(),
            Raw::from_json(serde_json::value::to_raw_value(content)?),
        );
        Ok(self.send(request, Some(token)).await?.event_id)
    }

    /// Uploads a file to the content repository as the token's user
    /// ([`POST /_matrix/media/v3/upload`](https://spec.matrix.org/v1.16/client-server-api/#post_matrixmediav3upload)).
    pub(crate) async fn upload(
        &self,
        token: &str,
        file: Vec<u8>,
        content_type: &str,
    ) -> Result<ruma::OwnedMxcUri> {
        let mut request = create_content::v3::Request::new(file);
        request.content_type = Some(content_type.to_owned());
        Ok(self.send(request, Some(token)).await?.content_uri)
    }

    /// Sets the token's user's display name
    /// ([`PUT /_matrix/client/v3/profile/{userId}/displayname`](https://spec.matrix.org/v1.16/client-server-api/#put_matrixclientv3profileuseriddisplayname)).
    // ruma marks this request deprecated for `set_profile_field`, whose stable path needs a
    // Matrix version this client does not claim; the v3 endpoint is still the spec's.
    #[allow(deprecated)]
    pub(crate) async fn set_display_name(
        &self,
        token: &str,
        user_id: &OwnedUserId,
        name: &str,
    ) -> Result<()> {
        let request = set_display_name::v3::Request::new(user_id.clone(), Some(name.to_owned()));
        self.send(request, Some(token)).await?;
        Ok(())
    }

    /// Sets the token's user's avatar
    /// ([`PUT /_matrix/client/v3/profile/{userId}/avatar_url`](https://spec.matrix.org/v1.16/client-server-api/#put_matrixclientv3profileuseridavatar_url)).
    // Deprecated in ruma for the same reason as the display name's.
    #[allow(deprecated)]
    pub(crate) async fn set_avatar_url(
        &self,
        token: &str,
        user_id: &OwnedUserId,
        avatar: ruma::OwnedMxcUri,
    ) -> Result<()> {
        let request = set_avatar_url::v3::Request::new(user_id.clone(), Some(avatar));
        self.send(request, Some(token)).await?;
        Ok(())
    }

    /// One event as the token's user sees it.
    pub(crate) async fn event(
        &self,
        token: &str,
        room_id: &OwnedRoomId,
        event_id: &OwnedEventId,
    ) -> Result<Value> {
        let request = get_room_event::v3::Request::new(room_id.clone(), event_id.clone());
        let response = self.send(request, Some(token)).await?;
        Ok(serde_json::from_str(response.event.json().get())?)
    }

    pub(crate) async fn join(&self, token: &str, room_id: &OwnedRoomId) -> Result<()> {
        self.send(
            join_room_by_id::v3::Request::new(room_id.clone()),
            Some(token),
        )
        .await?;
        Ok(())
    }

    pub(crate) async fn leave(&self, token: &str, room_id: &OwnedRoomId) -> Result<()> {
        self.send(leave_room::v3::Request::new(room_id.clone()), Some(token))
            .await?;
        Ok(())
    }

    pub(crate) async fn redact(
        &self,
        token: &str,
        room_id: &OwnedRoomId,
        event_id: &OwnedEventId,
    ) -> Result<OwnedEventId> {
        let request =
            redact_event::v3::Request::new(room_id.clone(), event_id.clone(), TransactionId::new());
        Ok(self.send(request, Some(token)).await?.event_id)
    }

    /// Ends the token's session.
    pub(crate) async fn logout(&self, token: &str) -> Result<()> {
        self.send(logout::v3::Request::new(), Some(token)).await?;
        Ok(())
    }
}
