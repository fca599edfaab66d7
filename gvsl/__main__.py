from gvsl.cli import main

raise SystemExit(main())
