"""Administration: command line now; admin pages come with the admin console."""
