//! What the homeserver offers to log in with, and the last step of single sign-on: the login
//! token it hands the browser, exchanged for an access token (`m.login.token`).

use ruma::{
    OwnedUserId,
    api::client::session::{get_login_types, login},
};
use trestle::{Result, ruma};

use super::UserApi;

/// The ways to log in that the page can offer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct LoginFlows {
    /// `m.login.password`
    pub(crate) password: bool,
    /// `m.login.sso`, with `m.login.token` to finish it
    pub(crate) sso: bool,
}

impl UserApi {
    /// `GET /login`: which of the page's ways the homeserver accepts.
    pub(crate) async fn login_flows(&self) -> Result<LoginFlows> {
        use get_login_types::v3::LoginType;
        let response = self.send(get_login_types::v3::Request::new(), None).await?;
        let has = |wanted: fn(&LoginType) -> bool| response.flows.iter().any(wanted);
        Ok(LoginFlows {
            password: has(|f| matches!(f, LoginType::Password(_))),
            // Single sign-on ends with a login token, so it needs both.
            sso: has(|f| matches!(f, LoginType::Sso(_)))
                && has(|f| matches!(f, LoginType::Token(_))),
        })
    }

    /// Exchanges a login token (single use, short-lived) for the user and an access token.
    pub(crate) async fn login_with_token(&self, token: &str) -> Result<(OwnedUserId, String)> {
        let mut request = login::v3::Request::new(login::v3::LoginInfo::Token(
            login::v3::Token::new(token.to_owned()),
        ));
        request.initial_device_display_name = Some("Trestle timeline".to_owned());
        let response = self.send(request, None).await?;
        Ok((response.user_id, response.access_token))
    }
}
