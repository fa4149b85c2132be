import sys

from capella_deploy.manifest import main

sys.exit(main())
