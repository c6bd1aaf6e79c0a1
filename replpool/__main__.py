import sys

from replpool._cli import main

sys.exit(main())
