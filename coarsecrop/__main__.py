from coarsecrop.cli import main

raise SystemExit(main())
