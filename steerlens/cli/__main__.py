"""``python -m steerlens.cli``."""

from steerlens.cli.app import main

raise SystemExit(main())
