from bertpress.app.cli import main

raise SystemExit(main())
