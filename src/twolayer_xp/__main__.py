import sys

from twolayer_xp.app.cli import main

sys.exit(main())
