"""Dashboard pages, one module each with a render() that the navigation in dashboards/app.py runs."""
