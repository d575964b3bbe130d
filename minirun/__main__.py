from minirun.cli import main

raise SystemExit(main())
