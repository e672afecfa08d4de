from mirage_env.train.recipes import main

main()
