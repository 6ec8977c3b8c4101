from kcheck.cli import script_main

raise SystemExit(script_main())
