//! Routing events to handler functions, the way axum routes requests.
//!
//! A handler is a plain `async fn` whose arguments are extractors ([`State`], [`Room`],
//! [`Sender`], [`Event`], [`Command`], [`Reply`], [`Appservice`](crate::Appservice), …).
//! When an event arrives every route whose filter matches is tried; a handler runs when all of
//! its extractors accept the event. A handler that asks for a `State<T>` the router was not
//! given does not compile.
//!
//! ```
//! use trestle::{Router, router::{Command, Room, State}, Appservice};
//!
//! #[derive(Clone)]
//! struct Greeting(String);
//!
//! async fn hello(cmd: Command, Room(room): Room, State(greeting): State<Greeting>, app: Appservice)
//!     -> trestle::Result<()>
//! {
//!     app.bot().send_text(&room, &format!("{} {}", greeting.0, cmd.args)).await?;
//!     Ok(())
//! }
//!
//! let router: Router = Router::new()
//!     .command("hello", hello)
//!     .with_state(Greeting("Hello,".into()));
//! ```
//!
//! A command can say more about itself with a [`CommandSpec`]: its usage line and description,
//! which the built-in `help` command lists, and the power level it needs in the room, which the
//! router checks before the handler runs.
//!
//! ```
//! use trestle::{Router, router::{Command, CommandSpec}};
//!
//! async fn kick(cmd: Command) { /* … */ }
//!
//! let router: Router = Router::new()
//!     .help(true)
//!     .command(
//!         CommandSpec::new("kick")
//!             .usage("<user> [reason]")
//!             .about("Removes a user from the room.")
//!             .min_power(50),
//!         kick,
//!     );
//! ```
//!
//! Several bots that take commands can share a room. A message can then name the bot it is
//! for (`!moderation status`, `@notify:example.org: !feed list`), and a bot answers a
//! command it does not have only where it is named or where no other command-taking bot it
//! knows of is in the room: see [`Addressee`].

mod address;
mod command;
mod context;
mod extract;
mod handler;
mod help;
mod reply;

use std::sync::Arc;

use ruma::OwnedUserId;

use crate::transaction::Incoming;

pub use address::Addressee;
pub use command::{Command, CommandSpec};
pub use context::EventContext;
pub use extract::{
    DeviceLists, Ephemeral, Event, FromEventContext, FromRef, IdempotencyKey, RawEvent, Rejection,
    Room, Sender, State, ToDevice,
};
pub use handler::{Handler, HandlerOutcome, IntoHandlerOutcome};
pub use help::power_level;
pub use reply::Reply;

type BoxedHandler<S> = Arc<
    dyn Fn(EventContext, S) -> futures_util::future::BoxFuture<'static, HandlerOutcome>
        + Send
        + Sync,
>;

/// Which events a route is offered.
#[derive(Clone, Debug)]
enum Filter {
    /// Every event; the handler's extractors decide.
    Any,
    /// Events of one type.
    Type(String),
    /// `m.room.message` events that are the command `<prefix><name>`, if the spec's checks
    /// pass.
    Command(Arc<CommandSpec>),
}

struct Route<S> {
    filter: Filter,
    name: &'static str,
    handler: BoxedHandler<S>,
}

impl<S> Clone for Route<S> {
    fn clone(&self) -> Self {
        Route {
            filter: self.filter.clone(),
            name: self.name,
            handler: self.handler.clone(),
        }
    }
}

/// Routes events to handlers. `S` is the state the handlers still need: a router can be given
/// to an appservice only once it needs none (`Router<()>`), after [`Router::with_state`].
pub struct Router<S = ()> {
    routes: Vec<Route<S>>,
    pub(crate) options: RouterOptions,
}

/// Behaviour that is not a handler.
#[derive(Clone, Debug)]
pub(crate) struct RouterOptions {
    pub(crate) command_prefix: String,
    pub(crate) accept_invites: bool,
    pub(crate) own_events: bool,
    pub(crate) help: bool,
    /// Commands handlers read themselves, for `help` and for knowing the names.
    pub(crate) declared: Vec<CommandSpec>,
    /// Other bots that take commands with this prefix.
    pub(crate) other_bots: Vec<OwnedUserId>,
    pub(crate) hooks: Hooks,
}

/// The plugin's answers to the homeserver's queries.
#[derive(Clone, Default)]
pub(crate) struct Hooks {
    pub(crate) user_query: Option<crate::UserQuery>,
    pub(crate) alias_query: Option<crate::AliasQuery>,
    pub(crate) thirdparty: Option<Arc<dyn crate::thirdparty::ThirdPartyLookup>>,
    pub(crate) web: Option<crate::service::WebRoutes>,
    pub(crate) services: Vec<crate::service::Service>,
    pub(crate) encryption: crate::encryption::EncryptionHook,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("user_query", &self.user_query.is_some())
            .field("alias_query", &self.alias_query.is_some())
            .field("thirdparty", &self.thirdparty.is_some())
            .field("web", &self.web.is_some())
            .field("encryption", &self.encryption.is_some())
            .field(
                "services",
                &self.services.iter().map(|s| s.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Default for RouterOptions {
    fn default() -> Self {
        RouterOptions {
            command_prefix: "!".to_owned(),
            accept_invites: false,
            own_events: false,
            help: false,
            declared: Vec::new(),
            other_bots: Vec::new(),
            hooks: Hooks::default(),
        }
    }
}

impl<S> Clone for Router<S> {
    fn clone(&self) -> Self {
        Router {
            routes: self.routes.clone(),
            options: self.options.clone(),
        }
    }
}

impl<S> Default for Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    /// An empty router.
    pub fn new() -> Self {
        Router {
            routes: Vec::new(),
            options: RouterOptions::default(),
        }
    }

    /// Answers the homeserver's "does this user exist?" (`GET /_matrix/app/v1/users/{userId}`,
    /// asked when someone looks up an unknown user in the plugin's namespace): return `true`
    /// to have the ghost registered and the homeserver told yes.
    /// Spec: <https://spec.matrix.org/v1.16/application-service-api/#get_matrixappv1usersuserid>
    pub fn on_user_query<F, Fut>(mut self, query: F) -> Self
    where
        F: Fn(crate::Appservice, ruma::OwnedUserId) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = crate::Result<bool>> + Send + 'static,
    {
        self.options.hooks.user_query = Some(Arc::new(move |app, user| Box::pin(query(app, user))));
        self
    }

    /// Answers the homeserver's "does this alias exist?" (`GET /_matrix/app/v1/rooms/{alias}`,
    /// asked when someone joins an unknown alias in the plugin's namespace): create the room
    /// with that alias, then return `true`.
    /// Spec: <https://spec.matrix.org/v1.16/application-service-api/#get_matrixappv1roomsroomalias>
    pub fn on_alias_query<F, Fut>(mut self, query: F) -> Self
    where
        F: Fn(crate::Appservice, ruma::OwnedRoomAliasId) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = crate::Result<bool>> + Send + 'static,
    {
        self.options.hooks.alias_query =
            Some(Arc::new(move |app, alias| Box::pin(query(app, alias))));
        self
    }

    /// Answers the `/thirdparty` lookups for the plugin's protocols (list them in the
    /// registration's `protocols`, see [`crate::Plugin::with_protocols`]).
    pub fn thirdparty(mut self, lookup: impl crate::thirdparty::ThirdPartyLookup) -> Self {
        self.options.hooks.thirdparty = Some(Arc::new(lookup));
        self
    }

    /// HTTP routes of the plugin's own (a web page, webhooks, a provisioning API), built once
    /// the appservice exists. They are served beside the Application Service API: under
    /// `/<plugin>` on the `trestle` host, at the root of [`crate::Appservice::http_router`].
    /// Paths must not collide with the API's (`/_matrix/…`, `/transactions/…`, `/users/…`,
    /// `/rooms/…`, `/thirdparty/…`); requests to them carry no homeserver token, so the
    /// routes authenticate their callers themselves. Called again replaces the routes.
    pub fn web<F>(mut self, routes: F) -> Self
    where
        F: Fn(crate::Appservice) -> axum::Router + Send + Sync + 'static,
    {
        self.options.hooks.web = Some(Arc::new(routes));
        self
    }

    /// A long-running task of the plugin's own (a connection to a remote network, a feed
    /// poller), started when the appservice starts serving and stopped when it stops. `run`
    /// should return once [`crate::Appservice::stopping`] completes; a task that returns an
    /// error, or ends while the appservice is running, is started again after a back-off
    /// (1 s doubling to 5 min).
    pub fn service<F, Fut>(self, name: &'static str, run: F) -> Self
    where
        F: Fn(crate::Appservice) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = crate::Result<()>> + Send + 'static,
    {
        self.push_service(name, false, run)
    }

    /// A long-running task, as [`Router::service`], that runs in one process at a time where
    /// several processes share a PostgreSQL store: work that must not be done twice, such as
    /// polling a feed whose new items are posted. The process holding the service's lease
    /// runs it and renews the lease while it runs; when that process stops, another takes the
    /// service over within 2 s, and when it dies, within the lease's 30 s. A process that
    /// cannot renew the lease stops the task (drops it) before another may start it. On a
    /// store one process alone writes (SQLite), the same as [`Router::service`].
    pub fn singleton<F, Fut>(self, name: &'static str, run: F) -> Self
    where
        F: Fn(crate::Appservice) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = crate::Result<()>> + Send + 'static,
    {
        self.push_service(name, true, run)
    }

    fn push_service<F, Fut>(mut self, name: &'static str, one_process: bool, run: F) -> Self
    where
        F: Fn(crate::Appservice) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = crate::Result<()>> + Send + 'static,
    {
        self.options.hooks.services.push(crate::service::Service {
            name,
            one_process,
            run: Arc::new(move |app| Box::pin(run(app))),
        });
        self
    }

    /// Installs end-to-end encryption (crate `trestle-crypto`): handlers then see encrypted
    /// events decrypted, and messages sent into encrypted rooms are encrypted.
    pub fn encryption(mut self, encryption: Arc<dyn crate::encryption::Encryption>) -> Self {
        self.options.hooks.encryption = Some(encryption);
        self
    }

    /// Offers every event to `handler`; its extractors decide whether it runs.
    pub fn on<H, T>(self, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        self.route(Filter::Any, handler)
    }

    /// Offers events of `event_type` to `handler` — the way to handle custom event types,
    /// usually with a [`RawEvent`] extractor.
    pub fn on_type<H, T>(self, event_type: impl Into<String>, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        self.route(Filter::Type(event_type.into()), handler)
    }

    /// Runs `handler` for messages of the form `<prefix><name> args…`; it can take a
    /// [`Command`] extractor for the arguments. `command` is a name, or a [`CommandSpec`] with
    /// a usage line and description for `help`, and a power level the sender must have.
    pub fn command<H, T>(self, command: impl Into<CommandSpec>, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        self.route(Filter::Command(Arc::new(command.into())), handler)
    }

    /// Whether the bot answers `<prefix>help` with the commands the sender may use, their
    /// usage lines and descriptions (`<prefix>help name` shows one). Off unless set; a
    /// `help` command of your own replaces it.
    pub fn help(mut self, help: bool) -> Self {
        self.options.help = help;
        self
    }

    /// Commands that a handler of the plugin reads itself (an [`on`](Router::on) handler with
    /// a [`Command`] extractor) rather than through [`command`](Router::command) routes:
    /// listed by [`commands`](Router::commands) and the built-in `help`, known to the router
    /// when it reads a message that names this bot (see [`Addressee`]), and making the
    /// plugin's bot a command-taking bot for the host's other plugins.
    pub fn declare_commands(mut self, specs: impl IntoIterator<Item = CommandSpec>) -> Self {
        self.options.declared.extend(specs);
        self
    }

    /// Other bots in the plugin's rooms that take commands with the same prefix, such as
    /// another appservice's bot: where one of them is a member, this bot answers only the
    /// commands it has, or those named for it (see [`Addressee`]). A host of several plugins
    /// (crate `trestle-host`) adds the other plugins' bots (see [`Router::commands_overlap`]).
    pub fn other_bots(mut self, bots: impl IntoIterator<Item = OwnedUserId>) -> Self {
        for bot in bots {
            if !self.options.other_bots.contains(&bot) {
                self.options.other_bots.push(bot);
            }
        }
        self
    }

    /// The commands, in the order they were added (routes, then declared ones), each name
    /// once (its first spec), with the built-in `help` last when it is on.
    pub fn commands(&self) -> Vec<&CommandSpec> {
        let mut specs: Vec<&CommandSpec> = Vec::new();
        let routes = self.routes.iter().filter_map(|route| match &route.filter {
            Filter::Command(spec) => Some(&**spec),
            _ => None,
        });
        for spec in routes.chain(&self.options.declared) {
            if !specs.iter().any(|s| s.name == spec.name) {
                specs.push(spec);
            }
        }
        if self.options.help && !specs.iter().any(|s| s.name == help::HELP) {
            specs.push(&BUILTIN_HELP);
        }
        specs
    }

    /// Whether the plugin has a command of this name (a route, a declared one, or the
    /// built-in `help`).
    pub(crate) fn knows(&self, name: &str) -> bool {
        (self.options.help && name == help::HELP)
            || self.options.declared.iter().any(|s| s.name == name)
            || self
                .routes
                .iter()
                .any(|r| matches!(&r.filter, Filter::Command(s) if s.name == name))
    }

    /// Whether `other` takes commands with a prefix that overlaps this router's (one starts
    /// with the other): then, in a room with both bots, an unknown command may be for the
    /// other's, which this one should be told of through [`Router::other_bots`]. Public for a
    /// host of several plugins (crate `trestle-host`), which tells each plugin of the others.
    pub fn commands_overlap(&self, other: &Self) -> bool {
        let (prefix, theirs) = (
            self.options.command_prefix.as_str(),
            other.options.command_prefix.as_str(),
        );
        other.takes_commands() && (prefix.starts_with(theirs) || theirs.starts_with(prefix))
    }

    /// Whether the plugin's bot takes commands: it has a command route, a declared command
    /// or the built-in `help`.
    pub(crate) fn takes_commands(&self) -> bool {
        self.options.help
            || !self.options.declared.is_empty()
            || self
                .routes
                .iter()
                .any(|r| matches!(r.filter, Filter::Command(_)))
    }

    /// The command prefix, `!` unless set.
    pub fn command_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.options.command_prefix = prefix.into();
        self
    }

    /// Whether the bot joins rooms it is invited to. Off unless set.
    pub fn accept_invites(mut self, accept: bool) -> Self {
        self.options.accept_invites = accept;
        self
    }

    /// Whether handlers see events sent by the appservice's own users (the bot and ghosts).
    /// Off unless set, so a bot never answers itself in a loop.
    pub fn own_events(mut self, own: bool) -> Self {
        self.options.own_events = own;
        self
    }

    fn route<H, T>(mut self, filter: Filter, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        let boxed: BoxedHandler<S> = Arc::new(move |ctx, state| handler.clone().call(ctx, state));
        self.routes.push(Route {
            filter,
            name: std::any::type_name::<H>(),
            handler: boxed,
        });
        self
    }

    /// Provides the state, giving a router that needs none. Every handler's `State<T>`
    /// extractor is checked against `S` when it is added, so nothing can be missing here.
    pub fn with_state<S2>(self, state: S) -> Router<S2>
    where
        S2: Clone + Send + Sync + 'static,
    {
        let routes = self
            .routes
            .into_iter()
            .map(|route| {
                let state = state.clone();
                let handler = route.handler;
                let boxed: BoxedHandler<S2> =
                    Arc::new(move |ctx, _: S2| handler(ctx, state.clone()));
                Route {
                    filter: route.filter,
                    name: route.name,
                    handler: boxed,
                }
            })
            .collect();
        Router {
            routes,
            options: self.options,
        }
    }
}

/// The built-in `help` command's spec.
static BUILTIN_HELP: std::sync::LazyLock<CommandSpec> = std::sync::LazyLock::new(help::help_spec);

impl Router<()> {
    /// Runs every matching handler for one item, one after another in registration order, then
    /// the built-in `help`. Errors and panics are logged with the event id and never escape.
    pub(crate) async fn dispatch(&self, ctx: EventContext) {
        use futures_util::FutureExt;

        let prefix = self.options.command_prefix.as_str();
        let mut gate = help::Gate::default();
        // Read once for every command route: `None` when the event is no command for this bot.
        let command = if self.takes_commands() {
            Command::read(&ctx).filter(|c| !matches!(c.addressee, Addressee::Other(_)))
        } else {
            None
        };
        for route in &self.routes {
            let command = match &route.filter {
                Filter::Any => None,
                Filter::Type(t) => {
                    if ctx.incoming().event_type() != Some(t.as_str()) {
                        continue;
                    }
                    None
                }
                Filter::Command(spec) => {
                    let Some(cmd) = command.as_ref().filter(|c| c.name == spec.name) else {
                        continue;
                    };
                    if !gate.admits(&ctx, spec, cmd, prefix).await {
                        continue;
                    }
                    Some(Arc::new(cmd.clone()))
                }
            };
            let ctx = ctx.for_route(command);
            let ctx_metrics = ctx.appservice().clone();
            let ctx_metrics = ctx_metrics.metrics();
            // For the logs of a failure only: the item is shared, its id not copied each time.
            let incoming = Arc::clone(&ctx.incoming);
            let event_id = || match &*incoming {
                Incoming::Timeline(e) => e.event_id.as_str(),
                _ => "",
            };
            let outcome = std::panic::AssertUnwindSafe((route.handler)(ctx, ()))
                .catch_unwind()
                .await;
            match outcome {
                Ok(HandlerOutcome::Done) | Ok(HandlerOutcome::Skipped) => {}
                Ok(HandlerOutcome::Rejected(reason)) => {
                    tracing::warn!(event_id = event_id(), handler = route.name, %reason, "event rejected by an extractor");
                }
                Ok(HandlerOutcome::Failed(error)) => {
                    ctx_metrics.handler_failed();
                    tracing::error!(event_id = event_id(), handler = route.name, %error, "handler failed");
                }
                Err(panic) => {
                    ctx_metrics.handler_panicked();
                    let message = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    tracing::error!(
                        event_id = event_id(),
                        handler = route.name,
                        message,
                        "handler panicked"
                    );
                }
            }
        }
        // A `help` route of the plugin's own replaces the built-in one.
        let own_help = self
            .routes
            .iter()
            .any(|r| matches!(&r.filter, Filter::Command(s) if s.name == help::HELP));
        if self.options.help
            && !own_help
            && let Some(cmd) = command.filter(|c| c.name == help::HELP)
        {
            // Boxed: see `Gate::admits`.
            Box::pin(gate.help(&ctx, &self.commands(), &cmd, prefix)).await;
        }
    }
}

#[cfg(test)]
mod tests;
