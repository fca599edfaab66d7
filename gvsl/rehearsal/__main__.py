"""``python -m gvsl.rehearsal`` (``make rehearse-paper``)."""

from gvsl.rehearsal import main

raise SystemExit(main())
