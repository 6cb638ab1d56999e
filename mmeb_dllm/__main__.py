"""``python -m mmeb_dllm ...`` = the ``mmeb-dllm`` command."""

from mmeb_dllm.cli import main

raise SystemExit(main())
