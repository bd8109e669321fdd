from postservice import create_app

app = create_app()
