// The page's script: see index.html.
