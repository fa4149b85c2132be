import sys

from capella_deploy.manifest.schema import main

sys.exit(main())
