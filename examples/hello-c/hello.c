/* The example the README's main job builds, attests and verifies. */
#include <stdio.h>

int main(void) {
    printf("hello from an attested build\n");
    return 0;
}
