"""bertpress.app: the composition root — the `bertpress` CLI, the `run` recipe pipeline, the
quickstart, `inspect`, and the search that ranks compress candidates in the deploy runtime (it
needs both compress and export: `search_runtimes.DEPLOY_RUNTIMES`, passed to compress by the CLI
and the pipeline). Everything else imports no module of this package."""
