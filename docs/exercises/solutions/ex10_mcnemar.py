"""Exercise 10: is the deeper network really better? McNemar's exact test on two networks' answers."""
import math


def mcnemar(correct_a: list[bool], correct_b: list[bool]) -> tuple[int, int, float]:
    """Two networks' right (True) and wrong answers on the same test images, in the same order.

    Returns ``(only_a, only_b, p)``: how many images only the first gets right, how many only the second, and
    the exact two-sided p-value of "neither is better": then each image that only one of them gets right is a
    fair coin's toss, so ``only_a`` follows Binomial(only_a + only_b, 1/2) and
    ``p = min(1, 2 * P(X <= min(only_a, only_b)))``; ``p = 1`` where no image is discordant.
    The images both get right, or both get wrong, say nothing about which one is better.
    """
    only_a = sum(1 for a, b in zip(correct_a, correct_b) if a and not b)
    only_b = sum(1 for a, b in zip(correct_a, correct_b) if b and not a)
    n = only_a + only_b
    if n == 0:
        return 0, 0, 1.0
    tail = sum(math.comb(n, k) for k in range(min(only_a, only_b) + 1)) / 2 ** n
    return only_a, only_b, min(1.0, 2 * tail)
