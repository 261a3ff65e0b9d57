//! A small CAS server (the Central Authentication Service protocol, version 2), the simplest
//! real single sign-on provider Synapse speaks (`cas_config`): for tests of logins where the
//! homeserver offers only single sign-on.
//!
//! Whoever visits its `/login` is the one user it was started for, as if they had typed their
//! password there: it sends the browser back to the `service` URL with a fresh ticket. Synapse
//! then asks `/proxyValidate` whether the ticket is good for that service, and gets the XML it
//! expects. Tickets are single use and bound to the service they were issued for, as in CAS.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use crate::loopback::LoopbackServer;
use axum::{
    Router,
    extract::{Query, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};

/// A running CAS server; dropping it stops it.
pub struct CasServer {
    server: LoopbackServer,
    shared: Arc<Shared>,
}

struct Shared {
    user: String,
    display_name: String,
    /// Ticket → the service it was issued for.
    tickets: Mutex<HashMap<String, String>>,
    logins: AtomicUsize,
    validated: AtomicUsize,
}

impl CasServer {
    /// Starts a CAS server on a free loopback port that logs everyone in as `user`, with the
    /// attribute `displayName`.
    pub async fn start(user: &str, display_name: &str) -> CasServer {
        let shared = Arc::new(Shared {
            user: user.to_owned(),
            display_name: display_name.to_owned(),
            tickets: Mutex::default(),
            logins: AtomicUsize::new(0),
            validated: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/login", get(login))
            .route("/proxyValidate", get(validate))
            .route("/serviceValidate", get(validate))
            .with_state(shared.clone());
        CasServer {
            server: LoopbackServer::start(app).await,
            shared,
        }
    }

    /// `http://127.0.0.1:PORT`, Synapse's `cas_config.server_url`.
    pub fn url(&self) -> &str {
        self.server.url()
    }

    /// The `cas_config` block of `homeserver.yaml` for this server.
    pub fn synapse_config(&self) -> String {
        format!(
            "cas_config:\n  enabled: true\n  server_url: \"{}\"\n  displayname_attribute: displayName\n",
            self.server.url()
        )
    }

    /// How many times a browser came to `/login`.
    pub fn logins(&self) -> usize {
        self.shared.logins.load(Ordering::SeqCst)
    }

    /// How many tickets were validated successfully.
    pub fn validated(&self) -> usize {
        self.shared.validated.load(Ordering::SeqCst)
    }
}

/// `GET /login?service=…`: the user is logged in at once; back to the service with a ticket.
async fn login(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(service) = query.get("service") else {
        return (StatusCode::BAD_REQUEST, "no service").into_response();
    };
    shared.logins.fetch_add(1, Ordering::SeqCst);
    let ticket = format!("ST-{}", trestle::registration::generate_token());
    shared
        .tickets
        .lock()
        .unwrap()
        .insert(ticket.clone(), service.clone());
    let separator = if service.contains('?') { '&' } else { '?' };
    (
        StatusCode::FOUND,
        [(
            header::LOCATION,
            format!("{service}{separator}ticket={ticket}"),
        )],
    )
        .into_response()
}

/// `GET /proxyValidate?ticket=…&service=…`: success only for a ticket issued for that very
/// service, once.
async fn validate(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let issued_for = query
        .get("ticket")
        .and_then(|ticket| shared.tickets.lock().unwrap().remove(ticket));
    let body = match (issued_for, query.get("service")) {
        (Some(issued_for), Some(service)) if issued_for == *service => {
            shared.validated.fetch_add(1, Ordering::SeqCst);
            format!(
                "<cas:serviceResponse xmlns:cas=\"http://www.yale.edu/tp/cas\">\n  \
                 <cas:authenticationSuccess>\n    <cas:user>{}</cas:user>\n    \
                 <cas:attributes>\n      <cas:displayName>{}</cas:displayName>\n    \
                 </cas:attributes>\n  </cas:authenticationSuccess>\n</cas:serviceResponse>\n",
                escape(&shared.user),
                escape(&shared.display_name)
            )
        }
        _ => "<cas:serviceResponse xmlns:cas=\"http://www.yale.edu/tp/cas\">\n  \
              <cas:authenticationFailure code=\"INVALID_TICKET\">unknown ticket, or another \
              service's</cas:authenticationFailure>\n</cas:serviceResponse>\n"
            .to_owned(),
    };
    ([(header::CONTENT_TYPE, "text/xml; charset=utf-8")], body).into_response()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
