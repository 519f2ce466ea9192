from sockwork.cli import main

raise SystemExit(main())
