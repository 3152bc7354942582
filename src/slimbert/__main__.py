from slimbert.cli import main

raise SystemExit(main())
