"""bamsprod service: settings, SQL store, REST API, HTML pages and the command line."""
