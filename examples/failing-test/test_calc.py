import unittest

import calc


class CalcTest(unittest.TestCase):
    def test_add(self):
        self.assertEqual(calc.add(2, 2), 4)

    def test_sub_is_wrong_on_purpose(self):
        # This pipeline shows "stop the line": this test fails, so nothing is packaged.
        self.assertEqual(calc.sub(2, 3), 1)


if __name__ == "__main__":
    unittest.main()
