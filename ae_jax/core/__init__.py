"""The foundation every other package uses: errors, plug-in registries, config checks, the console and
command-line helpers, device placement and the run's working directory.
"""
