from sapo_monitor.cli.main import main

main()
