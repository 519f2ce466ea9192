from storify.cli import main

raise SystemExit(main())
