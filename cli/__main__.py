from cli.launch import relaunched_args
from cli.main import main

if __name__ == "__main__":
    main(args=relaunched_args())
