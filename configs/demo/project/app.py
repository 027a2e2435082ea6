"""The sample project's entry point; the demo's agents add a greeting beside it."""


def main() -> None:
    print("This is the sample project of the Dispatch demo.")


if __name__ == "__main__":
    main()
