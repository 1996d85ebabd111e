from bertpress.cli import main

raise SystemExit(main())
