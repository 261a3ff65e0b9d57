-- Which of a plugin's own schema changes have been applied (see Store::migrate).
CREATE TABLE plugin_migrations (
    namespace TEXT NOT NULL,
    version BIGINT NOT NULL,
    applied_at BIGINT NOT NULL,
    PRIMARY KEY (namespace, version)
);
