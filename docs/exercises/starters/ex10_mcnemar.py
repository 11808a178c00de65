"""Exercise 10: is the deeper network really better? McNemar's exact test on two networks' answers."""
import math  # noqa: F401 (you will need math.comb)


def mcnemar(correct_a: list[bool], correct_b: list[bool]) -> tuple[int, int, float]:
    """Two networks' right (True) and wrong answers on the same test images, in the same order.

    Returns ``(only_a, only_b, p)``: how many images only the first gets right, how many only the second, and
    the exact two-sided p-value of "neither is better": then each image that only one of them gets right is a
    fair coin's toss, so ``only_a`` follows Binomial(only_a + only_b, 1/2) and
    ``p = min(1, 2 * P(X <= min(only_a, only_b)))``; ``p = 1`` where no image is discordant.
    The images both get right, or both get wrong, say nothing about which one is better.
    """
    # TODO: count the two kinds of discordant images
    # TODO: sum the binomial probabilities math.comb(n, k) / 2 ** n for k = 0 .. min(only_a, only_b)
    raise NotImplementedError("exercise 10: write mcnemar")
