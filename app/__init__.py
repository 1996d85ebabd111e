"""bertpress.app: the composition root — the `bertpress` CLI, the `run` recipe pipeline, the
quickstart, `inspect`, and the search that ranks compress candidates in the deploy runtime (it
needs both compress and export). Everything else imports no module of this package."""

from bertpress.app import search_runtimes  # noqa: E402,F401  registers the deploy-runtime search
