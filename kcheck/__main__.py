from kcheck.cli import main

raise SystemExit(main())
